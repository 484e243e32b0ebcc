#!/bin/bash
# Deploy the AuralSAM2 CVAT functions with nuctl, the way CVAT's serverless/deploy_cpu.sh does.
# usage: deploy.sh function.yaml|function-gpu.yaml [--cvat-data-volume NAME] [--videos HOST_DIR] [FUNCTION_DIR ...]
#   --cvat-data-volume NAME  docker volume holding CVAT's data directory, mounted read-only at
#                            /cvat-data in the detector (default cvat_cvat_data: volume cvat_data of
#                            the compose project cvat, as CVAT's docker-compose.yml creates it)
#   --videos HOST_DIR        also mount a host folder of source videos read-only at /videos in the
#                            detector (for tasks made from a server share)
#   FUNCTION_DIR             .../nuclio folders to deploy (default: all three)
set -eu

SCRIPT_DIR="$( cd "$( dirname "${BASH_SOURCE[0]}" )" >/dev/null 2>&1 && pwd )"
REPO_ROOT="$(dirname "$SCRIPT_DIR")"
CONFIG_NAME="$1"
shift
DATA_VOLUME=""
VIDEOS=""
FUNCTION_DIRS=()
while [ "$#" -gt 0 ]; do
    case "$1" in
        --cvat-data-volume) DATA_VOLUME="$2"; shift 2 ;;
        --videos) VIDEOS="$(realpath "$2")"; shift 2 ;;
        *) FUNCTION_DIRS+=("$1"); shift ;;
    esac
done
if [ "${#FUNCTION_DIRS[@]}" -eq 0 ]; then
    FUNCTION_DIRS=("$SCRIPT_DIR"/pytorch/auralsam2/*/nuclio)
fi

# the function images install napari-auralsam2 from a wheel copied next to their code
WORK_DIR="$(mktemp -d)"
trap 'rm -rf "$WORK_DIR"' EXIT
python3 -m pip wheel --no-deps --wheel-dir "$WORK_DIR/wheels" "$REPO_ROOT"

nuctl create project cvat --platform local || true

for func_root in "${FUNCTION_DIRS[@]}"; do
    rm -rf "$func_root/wheels"
    mkdir -p "$func_root/wheels"
    cp "$WORK_DIR"/wheels/*.whl "$func_root/wheels/"

    func_config="$func_root/$CONFIG_NAME"
    if grep -q "name: cvat-data" "$func_config"; then
        # nuclio's local platform mounts hostPath volumes with `docker run --volume SRC:DEST` and
        # ignores readOnly, so ":ro" goes into the mount path; --videos adds a second volume
        deployed_config="$WORK_DIR/$(basename "$(dirname "$func_root")")-$CONFIG_NAME"
        videos_env=""
        if [ -n "$VIDEOS" ]; then
            videos_env="/videos"
        fi
        sed -e "s#mountPath: /cvat-data\$#mountPath: /cvat-data:ro#" \
            -e "s#path: cvat_cvat_data\$#path: ${DATA_VOLUME:-cvat_cvat_data}#" \
            -e "/name: AURALSAM2_VIDEOS\$/{n;s#value: \"\"#value: \"$videos_env\"#}" "$func_config" |
        awk -v videos="$VIDEOS" '{ print }
            /^  volumes:$/ && videos != "" {
                print "    - volume:"
                print "        name: auralsam2-videos"
                print "        hostPath:"
                print "          path: " videos
                print "      volumeMount:"
                print "        name: auralsam2-videos"
                print "        mountPath: /videos:ro"
                print "        readOnly: true"
            }' > "$deployed_config"
        func_config="$deployed_config"
    fi

    echo "Deploying $func_root with $func_config..."
    nuctl deploy --project-name cvat --path "$func_root" \
        --file "$func_config" --platform local \
        --env CVAT_REDIS_HOST=cvat_redis_ondisk \
        --env CVAT_REDIS_PORT=6666 \
        --platform-config '{"attributes": {"network": "cvat_cvat"}}'
done

nuctl get function --platform local
