"""The widget's remembered choices (model, checkpoints, device...): a small JSON file in the user config dir."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from platformdirs import user_config_dir

from .sample_data import APP_NAME

SETTINGS_FILE = "widget.json"


@dataclass
class WidgetSettings:
    """What the user picked last time; unknown or malformed entries fall back to these defaults."""

    model: str = "hiera_l"
    image_size: int = 1024
    weights: str = "auto"  # "auto" (checkpoints/released files) or "random" (pipeline test only)
    checkpoint: str = ""
    sam2_checkpoint: str = ""
    device: str = "auto"
    release: str = "avs_v2"  # released weights (core.weights.AURALSAM2_WEIGHTS); "refavs" reads object texts
    compile: bool = False  # torch.compile the image encoder and fuser (faster on a GPU after the first window)
    direction: str = "both"
    new_layer_each_run: bool = False


def settings_path() -> Path:
    return Path(user_config_dir(APP_NAME)) / SETTINGS_FILE


def load_settings() -> WidgetSettings:
    """The saved settings, or the defaults when there are none or the file is unreadable."""
    try:
        saved = json.loads(settings_path().read_text())
    except (OSError, ValueError):
        return WidgetSettings()
    defaults = WidgetSettings()
    values = {}
    for field in fields(WidgetSettings):
        value = saved.get(field.name) if isinstance(saved, dict) else None
        if isinstance(value, type(getattr(defaults, field.name))):
            values[field.name] = value
    return WidgetSettings(**values)


def save_settings(settings: WidgetSettings) -> None:
    """Write the settings (best effort: a read-only config dir must not break segmentation)."""
    path = settings_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(settings), indent=1))
    except OSError:
        pass
