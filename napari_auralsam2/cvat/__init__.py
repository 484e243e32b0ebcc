"""CVAT host: a cvat-sdk detection function, nuclio handlers and the masklet tracks writer.

``cvat-cli task auto-annotate TASK --function-module napari_auralsam2.cvat -p video=str:src.mp4 ...``
calls :func:`create` with the ``-p`` parameters (see :mod:`napari_auralsam2.cvat.function`); it
serves image tasks only, as cvat-sdk 2.80 refuses video tasks (``UnsupportedDatasetError``) before
any function runs: annotate video tasks with ``auralsam2 cvat annotate``. Importing this package
is cheap: cvat_sdk and torch load when ``create`` is called.
"""
from __future__ import annotations


def create(**parameters):
    """The cvat-sdk DetectionFunction for ``cvat-cli task auto-annotate`` (parameters: see docs/cvat.md).

    Image tasks only: cvat-sdk 2.80 refuses video tasks (``UnsupportedDatasetError: Chunk-based
    media access is only supported for tasks whose original chunks are image sets``) before this
    runs; for a video task use ``auralsam2 cvat annotate --task N`` (tracks, with the task's sound).
    """
    from .function import create as _create

    return _create(**parameters)


__all__ = ["create"]
