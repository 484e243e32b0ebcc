"""Errors raised by the core, each carrying one actionable line for the user.

Hosts (CLI, napari, CVAT) catch :class:`AuralSAM2Error` and show ``str(error)`` as is, and may
list ``error.details`` (a few short lines, e.g. the first bad clips of a dataset) below it.
"""

from __future__ import annotations

from typing import Sequence


class AuralSAM2Error(Exception):
    """Base class: ``str(error)`` is a single line saying what failed and what to do."""

    def __init__(self, message: str, hint: str | None = None, details: Sequence[str] = ()) -> None:
        text = f"{message}; {hint}" if hint else message
        super().__init__(" ".join(text.split()))
        self.details = [" ".join(line.split()) for line in details]


class VideoError(AuralSAM2Error):
    """A video cannot be opened, indexed or decoded."""


class AudioError(AuralSAM2Error):
    """An audio track cannot be read or is unusable."""


class NoAudioError(AudioError):
    """Audio was required but the video has no audio track and none was given."""


class PromptError(AuralSAM2Error):
    """A prompt (points, box, frame index, object id) is invalid."""


class CheckpointError(AuralSAM2Error):
    """A checkpoint cannot be loaded or does not match the model."""


class WeightsMissingError(CheckpointError):
    """Pretrained weights are not present where they are expected."""
