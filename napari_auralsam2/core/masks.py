"""The one mask codec shared by every host: full-frame bitmaps <-> CVAT's mask formats and polygons.

Formats (all boxes inclusive, in image pixels):

* **full frame**: bool ``[H, W]`` (what the session returns).
* **CVAT detector mask** (nuclio detector replies): a flat row-major 0/1 bitmap of the box crop,
  followed by ``[xtl, ytl, xbr, ybr]``; the CVAT server turns it into RLE.
* **CVAT RLE** (REST API / SDK ``points`` of ``type="mask"`` shapes): run lengths over the box crop,
  row-major, alternating background/foreground and starting with background (a 0 when the crop
  starts with foreground), followed by ``[left, top, right, bottom]``. An empty mask is
  ``[1, 0, 0, 0, 0]``, as ``cvat_sdk.masks.encode_mask`` writes it.
* **polygons**: flat ``[x0, y0, x1, y1, ...]`` outer outlines along pixel edges (pixel ``(r, c)``
  covers ``[c, c+1] x [r, r+1]``), one per 4-connected component; holes are filled because
  CVAT polygons cannot have holes.

Numpy only: no cvat_sdk import (tests check the round trips against ``cvat_sdk.masks``).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BBOX_LEN = 4
#: fewest numbers in a CVAT RLE (one run + a box), as cvat_sdk.masks.decode_mask requires
MIN_RLE_LEN = 5
EMPTY_RLE = [1, 0, 0, 0, 0]
#: outline simplification (pixels) for polygons written to CVAT: far fewer points, IoU > 0.97
POLYGON_TOLERANCE = 1.0
#: direction codes of boundary edges, and their unit steps (x right, y down)
EAST, SOUTH, WEST, NORTH = 0, 1, 2, 3
_STEP_X = np.array([1, 0, -1, 0])
_STEP_Y = np.array([0, 1, 0, -1])

BBox = tuple[int, int, int, int]


def _bitmap(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"a mask must be 2-D (H, W), got shape {mask.shape}")
    return mask if mask.dtype == bool else mask != 0


def bbox(mask: np.ndarray) -> BBox | None:
    """Inclusive ``(xtl, ytl, xbr, ybr)`` of the foreground, or None when the mask is empty."""
    mask = _bitmap(mask)
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])


def _check_box(box: Sequence[float], width: int, height: int) -> BBox:
    values = [float(v) for v in box]
    if any(not v.is_integer() for v in values):
        raise ValueError(f"mask box {list(box)} must hold integers")
    x0, y0, x1, y1 = (int(v) for v in values)
    if not (0 <= x0 <= x1 < width and 0 <= y0 <= y1 < height):
        raise ValueError(f"mask box {[x0, y0, x1, y1]} does not fit a {width}x{height} image")
    return x0, y0, x1, y1


# -- CVAT detector format ------------------------------------------------------------------
def to_detector_mask(mask: np.ndarray) -> list[int]:
    """Full-frame mask -> CVAT detector ``mask`` list (crop bitmap + box); ValueError if empty."""
    mask = _bitmap(mask)
    box = bbox(mask)
    if box is None:
        raise ValueError("an empty mask has no CVAT detector encoding: leave the shape out")
    x0, y0, x1, y1 = box
    return mask[y0:y1 + 1, x0:x1 + 1].astype(np.uint8).ravel().tolist() + [x0, y0, x1, y1]


def from_detector_mask(values: Sequence[float], width: int, height: int) -> np.ndarray:
    """CVAT detector ``mask`` list -> full-frame bool ``[height, width]``."""
    if len(values) < BBOX_LEN + 1:
        raise ValueError("a detector mask needs a bitmap and a box")
    x0, y0, x1, y1 = _check_box(values[-BBOX_LEN:], width, height)
    crop = np.asarray(values[:-BBOX_LEN], dtype=np.float64)
    if crop.size != (x1 - x0 + 1) * (y1 - y0 + 1):
        raise ValueError(f"detector mask bitmap has {crop.size} values, its box needs "
                         f"{(x1 - x0 + 1) * (y1 - y0 + 1)}")
    full = np.zeros((height, width), dtype=bool)
    full[y0:y1 + 1, x0:x1 + 1] = crop.reshape(y1 - y0 + 1, x1 - x0 + 1) != 0
    return full


# -- CVAT RLE ------------------------------------------------------------------------------
def _runs(flat: np.ndarray) -> list[int]:
    """Run lengths of a flat bool array, starting with a (possibly empty) background run."""
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    edges = np.concatenate(([0], change, [flat.size]))
    runs = np.diff(edges).tolist()
    return [0] + runs if flat[0] else runs


def to_rle(mask: np.ndarray, box: Sequence[int] | None = None) -> list[int]:
    """Full-frame mask -> CVAT RLE ``points``; ``box`` (inclusive) defaults to the foreground's."""
    mask = _bitmap(mask)
    height, width = mask.shape
    if box is None:
        box = bbox(mask)
        if box is None:
            return list(EMPTY_RLE)
    x0, y0, x1, y1 = _check_box(box, width, height)
    return _runs(mask[y0:y1 + 1, x0:x1 + 1].ravel()) + [x0, y0, x1, y1]


def detector_mask_to_rle(values: Sequence[float]) -> list[int]:
    """What the CVAT server stores for a detector ``mask`` (its bitmap run-length encoded)."""
    if len(values) < BBOX_LEN + 1:
        raise ValueError("a detector mask needs a bitmap and a box")
    flat = np.asarray(values[:-BBOX_LEN], dtype=np.float64) != 0
    return _runs(flat) + [int(v) for v in values[-BBOX_LEN:]]


def from_rle(points: Sequence[float], width: int, height: int) -> np.ndarray:
    """CVAT RLE ``points`` -> full-frame bool ``[height, width]`` (ValueError on a bad encoding)."""
    if len(points) < MIN_RLE_LEN:
        raise ValueError(f"a CVAT mask needs at least {MIN_RLE_LEN} numbers, got {len(points)}")
    if width <= 0 or height <= 0:
        raise ValueError(f"invalid image size {width}x{height}")
    x0, y0, x1, y1 = _check_box(points[-BBOX_LEN:], width, height)
    runs = np.asarray(points[:-BBOX_LEN], dtype=np.float64)
    if np.any(runs != np.round(runs)) or np.any(runs < 0):
        raise ValueError("CVAT mask run lengths must be non-negative integers")
    runs = runs.astype(np.int64)
    crop_w, crop_h = x1 - x0 + 1, y1 - y0 + 1
    if int(runs.sum()) != crop_w * crop_h:
        raise ValueError(f"CVAT mask runs cover {int(runs.sum())} pixels, its box has {crop_w * crop_h}")
    values = (np.arange(runs.size) % 2).astype(bool)
    full = np.zeros((height, width), dtype=bool)
    full[y0:y1 + 1, x0:x1 + 1] = np.repeat(values, runs).reshape(crop_h, crop_w)
    return full


# -- polygons ------------------------------------------------------------------------------
def _boundary_edges(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Directed pixel-edge boundary of the foreground, foreground on the right of travel.

    Returns (start x, start y, direction) arrays sorted by (vertex, direction) key.
    """
    padded = np.pad(mask, 1)
    inner = padded[1:-1, 1:-1]
    starts_x, starts_y, dirs = [], [], []
    # (neighbour slice, edge start offset (dx, dy) from the pixel's top-left corner, direction)
    sides = ((padded[:-2, 1:-1], (0, 0), EAST), (padded[1:-1, 2:], (1, 0), SOUTH),
             (padded[2:, 1:-1], (1, 1), WEST), (padded[1:-1, :-2], (0, 1), NORTH))
    for neighbour, (dx, dy), direction in sides:
        r, c = np.nonzero(inner & ~neighbour)
        starts_x.append(c + dx)
        starts_y.append(r + dy)
        dirs.append(np.full(r.size, direction))
    x, y, d = np.concatenate(starts_x), np.concatenate(starts_y), np.concatenate(dirs)
    order = np.argsort(_edge_key(x, y, d, mask.shape[1]), kind="stable")
    return x[order], y[order], d[order]


def _edge_key(x: np.ndarray, y: np.ndarray, d: np.ndarray, width: int) -> np.ndarray:
    return ((y.astype(np.int64) * (width + 1) + x) * 4) + d


def _successors(x: np.ndarray, y: np.ndarray, d: np.ndarray, width: int) -> np.ndarray:
    """Index of the edge that follows each edge: right turn, else straight, else left turn.

    Taking the right turn first at a pinch (two diagonal pixels) keeps 4-connected components apart.
    """
    keys = _edge_key(x, y, d, width)
    end_x, end_y = x + _STEP_X[d], y + _STEP_Y[d]
    successor = np.full(x.size, -1, dtype=np.int64)
    for turn in (1, 0, 3):  # right, straight, left (direction codes run clockwise)
        todo = successor < 0
        want = _edge_key(end_x[todo], end_y[todo], (d[todo] + turn) % 4, width)
        pos = np.clip(np.searchsorted(keys, want), 0, keys.size - 1)
        found = keys[pos] == want
        idx = np.flatnonzero(todo)[found]
        successor[idx] = pos[found]
    return successor


def _loops(x: np.ndarray, y: np.ndarray, d: np.ndarray, successor: np.ndarray) -> list[np.ndarray]:
    """Closed loops as [n, 2] corner vertices (only where the direction changes)."""
    seen = np.zeros(x.size, dtype=bool)
    loops = []
    nxt = successor.tolist()
    for first in range(x.size):
        if seen[first]:
            continue
        chain = []
        edge = first
        while not seen[edge]:
            seen[edge] = True
            chain.append(edge)
            edge = nxt[edge]
        chain = np.asarray(chain)
        turns = d[chain] != d[np.roll(chain, 1)]
        corners = chain[turns]
        loops.append(np.stack([x[corners], y[corners]], axis=1))
    return loops


def _signed_area(loop: np.ndarray) -> float:
    """Shoelace area; outer outlines (clockwise on screen, y down) are positive."""
    xs, ys = loop[:, 0].astype(np.float64), loop[:, 1].astype(np.float64)
    return 0.5 * float(np.sum(xs * np.roll(ys, -1) - np.roll(xs, -1) * ys))


def _simplify(loop: np.ndarray, tolerance: float) -> np.ndarray:
    """Douglas-Peucker on a closed outline, split at its two mutually far vertices."""
    if tolerance <= 0 or len(loop) <= 4:
        return loop
    far = int(np.argmax(np.sum((loop - loop[0]) ** 2, axis=1)))
    halves = (loop[:far + 1], np.concatenate([loop[far:], loop[:1]]))
    kept = [_douglas_peucker(half.astype(np.float64), tolerance)[:-1] for half in halves]
    simplified = np.concatenate(kept)
    return simplified if len(simplified) >= 3 else loop


def _douglas_peucker(points: np.ndarray, tolerance: float) -> np.ndarray:
    keep = np.zeros(len(points), dtype=bool)
    keep[[0, -1]] = True
    stack = [(0, len(points) - 1)]
    while stack:
        lo, hi = stack.pop()
        if hi - lo < 2:
            continue
        a, b = points[lo], points[hi]
        seg = b - a
        rel = points[lo + 1:hi] - a
        norm = float(np.hypot(*seg))
        dist = np.abs(seg[0] * rel[:, 1] - seg[1] * rel[:, 0]) / norm if norm else np.hypot(rel[:, 0], rel[:, 1])
        i = int(np.argmax(dist))
        if dist[i] > tolerance:
            mid = lo + 1 + i
            keep[mid] = True
            stack += [(lo, mid), (mid, hi)]
    return points[keep]


def to_polygons(mask: np.ndarray, tolerance: float = 0.0, min_area: float = 1.0) -> list[list[float]]:
    """Full-frame mask -> outer outlines as flat ``[x0, y0, x1, y1, ...]`` lists, largest first.

    ``tolerance`` (pixels) simplifies each outline (0 keeps it exact); outlines enclosing fewer than
    ``min_area`` pixels are dropped.
    """
    mask = _bitmap(mask)
    box = bbox(mask)
    if box is None:
        return []
    x0, y0, x1, y1 = box
    crop = mask[y0:y1 + 1, x0:x1 + 1]
    x, y, d = _boundary_edges(crop)
    outlines = []
    for loop in _loops(x, y, d, _successors(x, y, d, crop.shape[1])):
        area = _signed_area(loop)
        if area >= min_area:  # holes run the other way (negative area)
            outlines.append((area, _simplify(loop, tolerance) + (x0, y0)))
    outlines.sort(key=lambda item: -item[0])
    return [loop.astype(np.float64).ravel().tolist() for _, loop in outlines]


def polygons_to_mask(polygons: Sequence[Sequence[float]], width: int, height: int) -> np.ndarray:
    """Rasterise flat polygons: a pixel is set when its centre lies inside any of them (even-odd)."""
    full = np.zeros((height, width), dtype=bool)
    for flat in polygons:
        pts = np.asarray(flat, dtype=np.float64).reshape(-1, 2)
        if len(pts) < 3:
            continue
        cx0, cy0 = np.floor(pts.min(axis=0)).astype(int)
        cx1, cy1 = np.ceil(pts.max(axis=0)).astype(int)
        cx0, cy0 = max(cx0, 0), max(cy0, 0)
        cx1, cy1 = min(cx1, width), min(cy1, height)
        if cx1 <= cx0 or cy1 <= cy0:
            continue
        ys, xs = np.mgrid[cy0:cy1, cx0:cx1] + 0.5
        inside = np.zeros(xs.shape, dtype=bool)
        xa, ya = pts[:, 0], pts[:, 1]
        xb, yb = np.roll(xa, -1), np.roll(ya, -1)
        for ax, ay, bx, by in zip(xa, ya, xb, yb):
            if ay == by:
                continue
            crosses = (ay > ys) != (by > ys)
            x_at = ax + (ys - ay) * (bx - ax) / (by - ay)
            inside ^= crosses & (xs < x_at)
        full[cy0:cy1, cx0:cx1] |= inside
    return full


def resize_mask(mask: np.ndarray, width: int, height: int) -> np.ndarray:
    """Nearest-neighbour resize of a bool mask (pixel centres map to pixel centres)."""
    mask = _bitmap(mask)
    src_h, src_w = mask.shape
    if (src_w, src_h) == (width, height):
        return mask
    rows = np.minimum(((np.arange(height) + 0.5) * src_h / height).astype(int), src_h - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * src_w / width).astype(int), src_w - 1)
    return mask[rows[:, None], cols[None, :]]


__all__ = ["bbox", "to_detector_mask", "from_detector_mask", "to_rle", "from_rle", "detector_mask_to_rle",
           "to_polygons", "polygons_to_mask", "resize_mask", "EMPTY_RLE", "POLYGON_TOLERANCE"]
