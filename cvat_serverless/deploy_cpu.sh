#!/bin/bash
# Deploy the AuralSAM2 CVAT functions on CPU (see deploy.sh for the options).
exec "$(dirname "${BASH_SOURCE[0]}")/deploy.sh" function.yaml "$@"
