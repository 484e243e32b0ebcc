"""How a decoded frame is shown: the display matrix a container carries (phone videos) as a quarter
turn and/or flip.

Players apply the matrix when they show a video; `core.video` does the same, so frames, prompts,
masks and overlays all share the displayed orientation. Turns other than quarter turns would need
resampling and are refused.
"""
from __future__ import annotations

import av
import numpy as np

from .errors import VideoError

DISPLAY_MATRIX = "DISPLAYMATRIX"
FIXED_POINT_ONE = 1 << 16  # display matrix entries a, b, c, d are 16.16 fixed point
#: how the stored picture becomes the displayed one: (transpose, flip rows, flip columns)
Orientation = tuple[bool, bool, bool]
UPRIGHT: Orientation = (False, False, False)


def display_orientation(frame: av.VideoFrame, name: str) -> Orientation:
    """The quarter turn/flip a player applies, from the frame's display matrix (upright without one).

    Matrix entries a, b, c, d map a stored pixel (x, y) to the displayed (a x + c y, b x + d y)
    (plus an offset), as in MP4's track header.
    """
    side = frame.side_data.get(DISPLAY_MATRIX)
    if side is None:
        return UPRIGHT
    matrix = np.frombuffer(bytes(side), dtype=np.int32).astype(np.float64)
    a, b, c, d = (matrix[[0, 1, 3, 4]] / FIXED_POINT_ONE).tolist()
    signs = np.rint([a, b, c, d])
    quarter = np.allclose([a, b, c, d], signs, atol=1e-3) and abs(signs[0] * signs[3] - signs[1] * signs[2]) == 1
    if not quarter:
        turn = round(-float(np.degrees(np.arctan2(b, a))), 1)  # as FFmpeg's av_display_rotation_get
        raise VideoError(f"{name} is meant to be shown turned by {turn:g} degrees (counterclockwise); "
                         "only quarter turns can be applied without resampling",
                         "re-encode it upright (e.g. ffmpeg -i in.mp4 out.mp4)")
    a, b, c, d = signs.tolist()
    if a == 0:
        return (True, b < 0, c < 0)
    return (False, d < 0, a < 0)


def orient(frame: np.ndarray, orientation: Orientation) -> np.ndarray:
    """A decoded ``[H, W, 3]`` frame as displayed."""
    transpose, flip_rows, flip_cols = orientation
    if transpose:
        frame = frame.transpose(1, 0, 2)
    if flip_rows:
        frame = frame[::-1]
    if flip_cols:
        frame = frame[:, ::-1]
    return np.ascontiguousarray(frame)
