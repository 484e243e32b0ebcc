"""cvat_serverless/deploy.sh: what it hands ``nuctl deploy`` (nuctl and docker cannot run here).

``nuctl`` is a stand-in that records its arguments and the function configuration it is given;
``python3`` is one that answers ``pip wheel`` with an empty wheel (building ours needs an index).
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import yaml

from ._cvat_support import FUNCTIONS, ROOT

DEPLOY = ROOT / "cvat_serverless" / "deploy.sh"
FAKE_NUCTL = """#!/bin/sh
echo "$*" >> "$NUCTL_LOG"
path=""; file=""
while [ $# -gt 0 ]; do
    case "$1" in --path) path="$2"; shift ;; --file) file="$2"; shift ;; esac
    shift
done
if [ -n "$file" ]; then cp "$file" "$NUCTL_CAPTURE/$(basename "$(dirname "$path")").yaml"; fi
"""
FAKE_PYTHON = """#!/bin/sh
while [ "$1" != "--wheel-dir" ]; do shift; done
mkdir -p "$2" && touch "$2/napari_auralsam2-0.1.0-py3-none-any.whl"
"""


def deploy(tmp_path: Path, *options: str) -> dict[str, dict]:
    """Run deploy.sh (CPU) on copies of the detector and interactor; the configs nuctl got, by kind."""
    functions, tools, capture = tmp_path / "functions", tmp_path / "bin", tmp_path / "deployed"
    for folder in (tools, capture):
        folder.mkdir()
    for kind in ("detector", "interactor"):
        shutil.copytree(FUNCTIONS / kind / "nuclio", functions / kind / "nuclio")
    for name, script in (("nuctl", FAKE_NUCTL), ("python3", FAKE_PYTHON)):
        (tools / name).write_text(script)
        (tools / name).chmod(0o755)
    env = dict(os.environ, PATH=f"{tools}{os.pathsep}{os.environ['PATH']}", NUCTL_LOG=str(tmp_path / "nuctl.log"),
               NUCTL_CAPTURE=str(capture))
    subprocess.run(["bash", str(DEPLOY), "function.yaml", *options, str(functions / "detector" / "nuclio"),
                    str(functions / "interactor" / "nuclio")], check=True, env=env, capture_output=True, text=True)
    assert (functions / "detector" / "nuclio" / "wheels" / "napari_auralsam2-0.1.0-py3-none-any.whl").is_file()
    return {path.stem: yaml.safe_load(path.read_text()) for path in capture.glob("*.yaml")}


def volumes(config: dict) -> dict[str, tuple[str, str, bool]]:
    return {v["volume"]["name"]: (v["volume"]["hostPath"]["path"], v["volumeMount"]["mountPath"],
                                  v["volumeMount"]["readOnly"]) for v in config["spec"].get("volumes", [])}


def env(config: dict) -> dict[str, str]:
    return {item["name"]: item["value"] for item in config["spec"]["env"]}


def test_the_detector_gets_cvat_data_read_only(tmp_path):
    configs = deploy(tmp_path)
    # nuclio's local platform runs `docker run --volume SRC:DEST` and ignores readOnly: ":ro" goes in DEST
    assert volumes(configs["detector"]) == {"cvat-data": ("cvat_cvat_data", "/cvat-data:ro", True)}
    settings = env(configs["detector"])
    assert settings["AURALSAM2_CVAT_DATA"] == "/cvat-data" and settings["AURALSAM2_VIDEOS"] == ""
    original = yaml.safe_load((FUNCTIONS / "interactor" / "nuclio" / "function.yaml").read_text())
    assert configs["interactor"] == original and volumes(configs["interactor"]) == {}


def test_deploy_options_name_the_volume_and_add_a_videos_folder(tmp_path):
    share = tmp_path / "share"
    share.mkdir()
    configs = deploy(tmp_path, "--cvat-data-volume", "mycvat_cvat_data", "--videos", str(share))
    assert volumes(configs["detector"]) == {"cvat-data": ("mycvat_cvat_data", "/cvat-data:ro", True),
                                            "auralsam2-videos": (str(share.resolve()), "/videos:ro", True)}
    assert env(configs["detector"])["AURALSAM2_VIDEOS"] == "/videos"
    log = (tmp_path / "nuctl.log").read_text()
    assert "create project cvat --platform local" in log and log.count("deploy --project-name cvat") == 2
