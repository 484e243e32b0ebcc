"""CVAT host: a cvat-sdk detection function, nuclio handlers and the masklet tracks writer.

``cvat-cli task auto-annotate TASK --function-module napari_auralsam2.cvat -p video=str:src.mp4 ...``
calls :func:`create` with the ``-p`` parameters (see :mod:`napari_auralsam2.cvat.function`).
Importing this package is cheap: cvat_sdk and torch load when ``create`` is called.
"""
from __future__ import annotations


def create(**parameters):
    """The cvat-sdk DetectionFunction for ``cvat-cli task auto-annotate`` (parameters: see docs/cvat.md)."""
    from .function import create as _create

    return _create(**parameters)


__all__ = ["create"]
