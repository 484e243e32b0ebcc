#!/bin/bash
# Deploy the AuralSAM2 CVAT functions on an NVIDIA GPU (see deploy.sh for the options).
exec "$(dirname "${BASH_SOURCE[0]}")/deploy.sh" function-gpu.yaml "$@"
