#!/bin/bash
# Deploy the AuralSAM2 CVAT functions with nuctl, the way CVAT's serverless/deploy_cpu.sh does.
# usage: deploy.sh function.yaml|function-gpu.yaml [--videos HOST_DIR] [FUNCTION_DIR ...]
#   --videos HOST_DIR  host folder with the tasks' source videos, mounted read-only at /videos
#                      in the detector (default: the path written in its function.yaml)
#   FUNCTION_DIR       .../nuclio folders to deploy (default: all three)
set -eu

SCRIPT_DIR="$( cd "$( dirname "${BASH_SOURCE[0]}" )" >/dev/null 2>&1 && pwd )"
REPO_ROOT="$(dirname "$SCRIPT_DIR")"
CONFIG_NAME="$1"
shift
VIDEOS=""
if [ "${1:-}" = "--videos" ]; then
    VIDEOS="$(realpath "$2")"
    shift 2
fi
if [ "$#" -gt 0 ]; then
    FUNCTION_DIRS=("$@")
else
    FUNCTION_DIRS=("$SCRIPT_DIR"/pytorch/auralsam2/*/nuclio)
fi

# the function images install napari-auralsam2 from a wheel copied next to their code
WHEEL_DIR="$(mktemp -d)"
trap 'rm -rf "$WHEEL_DIR"' EXIT
python3 -m pip wheel --no-deps --wheel-dir "$WHEEL_DIR" "$REPO_ROOT"

nuctl create project cvat --platform local || true

for func_root in "${FUNCTION_DIRS[@]}"; do
    rm -rf "$func_root/wheels"
    mkdir -p "$func_root/wheels"
    cp "$WHEEL_DIR"/*.whl "$func_root/wheels/"

    func_config="$func_root/$CONFIG_NAME"
    if [ -n "$VIDEOS" ] && grep -q "auralsam2-videos" "$func_config"; then
        sed "s#path: /srv/auralsam2/videos#path: $VIDEOS#" "$func_config" > "$WHEEL_DIR/$(basename "$(dirname "$func_root")").yaml"
        func_config="$WHEEL_DIR/$(basename "$(dirname "$func_root")").yaml"
    fi

    echo "Deploying $func_root with $func_config..."
    nuctl deploy --project-name cvat --path "$func_root" \
        --file "$func_config" --platform local \
        --env CVAT_REDIS_HOST=cvat_redis_ondisk \
        --env CVAT_REDIS_PORT=6666 \
        --platform-config '{"attributes": {"network": "cvat_cvat"}}'
done

nuctl get function --platform local
