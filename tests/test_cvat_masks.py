"""The shared mask codec (core/masks.py) against cvat-sdk's own encoder/decoder."""
from __future__ import annotations

import numpy as np
import pytest
from cvat_sdk.masks import decode_mask, encode_mask
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.ndimage import binary_fill_holes

from napari_auralsam2.core import masks as codec

MAX_SIDE = 24
masks = st.tuples(st.integers(1, MAX_SIDE), st.integers(1, MAX_SIDE)).flatmap(
    lambda hw: arrays(np.bool_, hw, elements=st.booleans()))
sparse_or_dense = st.one_of(masks, masks.map(lambda m: m & np.roll(m, 1, axis=0) & np.roll(m, 1, axis=1)))
FAST = settings(max_examples=150, deadline=None)


@FAST
@given(sparse_or_dense)
def test_rle_equals_cvat_sdk_and_round_trips(mask):
    height, width = mask.shape
    points = codec.to_rle(mask)
    assert points == encode_mask(mask)
    assert np.array_equal(codec.from_rle(points, width, height), mask)
    assert np.array_equal(decode_mask(points, image_width=width, image_height=height), mask)


@FAST
@given(masks, st.data())
def test_rle_with_an_explicit_box_matches_cvat_sdk(mask, data):
    height, width = mask.shape
    x0 = data.draw(st.integers(0, width - 1))
    y0 = data.draw(st.integers(0, height - 1))
    x1 = data.draw(st.integers(x0, width - 1))
    y1 = data.draw(st.integers(y0, height - 1))
    points = codec.to_rle(mask, (x0, y0, x1, y1))
    assert points == encode_mask(mask, (x0, y0, x1 + 1, y1 + 1))  # cvat-sdk's bbox argument is end-exclusive
    expected = np.zeros_like(mask)
    expected[y0:y1 + 1, x0:x1 + 1] = mask[y0:y1 + 1, x0:x1 + 1]
    assert np.array_equal(codec.from_rle(points, width, height), expected)


@FAST
@given(sparse_or_dense)
def test_detector_mask_round_trips_and_becomes_the_sdk_rle_on_the_server(mask):
    height, width = mask.shape
    if not mask.any():
        with pytest.raises(ValueError, match="empty"):
            codec.to_detector_mask(mask)
        return
    values = codec.to_detector_mask(mask)
    x0, y0, x1, y1 = values[-4:]
    assert set(values[:-4]) <= {0, 1} and len(values) - 4 == (x1 - x0 + 1) * (y1 - y0 + 1)
    assert np.array_equal(codec.from_detector_mask(values, width, height), mask)
    # what CVAT's lambda manager stores for a detector mask: the crop bitmap run-length encoded + the box
    assert codec.detector_mask_to_rle(values) == encode_mask(mask)


@FAST
@given(sparse_or_dense)
def test_polygons_trace_every_component_exactly_with_holes_filled(mask):
    height, width = mask.shape
    polygons = codec.to_polygons(mask)
    assert all(len(p) >= 6 and len(p) % 2 == 0 for p in polygons)
    # outlines of 4-connected components; a hole is background not 8-connected to the outside
    expected = binary_fill_holes(mask, structure=np.ones((3, 3), bool))
    assert np.array_equal(codec.polygons_to_mask(polygons, width, height), expected)
    areas = [abs(_area(p)) for p in polygons]
    assert areas == sorted(areas, reverse=True)


def _area(flat):
    xs, ys = np.asarray(flat[0::2]), np.asarray(flat[1::2])
    return 0.5 * np.sum(xs * np.roll(ys, -1) - np.roll(xs, -1) * ys)


def test_simplified_polygons_stay_close_and_small():
    ys, xs = np.mgrid[0:120, 0:160]
    disc = (xs - 70) ** 2 + (ys - 60) ** 2 < 45 ** 2
    exact = codec.to_polygons(disc)
    simple = codec.to_polygons(disc, tolerance=1.0)
    assert len(exact) == len(simple) == 1
    assert len(simple[0]) < len(exact[0]) / 4
    redrawn = codec.polygons_to_mask(simple, 160, 120)
    iou = (redrawn & disc).sum() / (redrawn | disc).sum()
    assert iou > 0.97


def test_polygon_pixels_follow_cvat_coordinates():
    mask = np.zeros((6, 8), bool)
    mask[2:4, 3:6] = True  # pixels x 3..5, y 2..3 -> outline on pixel edges x 3..6, y 2..4
    (outline,) = codec.to_polygons(mask)
    corners = sorted(zip(outline[0::2], outline[1::2]))
    assert corners == [(3, 2), (3, 4), (6, 2), (6, 4)]
    assert codec.bbox(mask) == (3, 2, 5, 3)


def test_small_fragments_are_dropped_by_min_area():
    mask = np.zeros((10, 10), bool)
    mask[1:6, 1:6] = True
    mask[8, 8] = True
    assert len(codec.to_polygons(mask)) == 2
    assert len(codec.to_polygons(mask, min_area=2)) == 1


def test_empty_masks_follow_the_sdk_convention():
    empty = np.zeros((5, 7), bool)
    assert codec.to_rle(empty) == encode_mask(empty) == [1, 0, 0, 0, 0]
    assert not codec.from_rle([1, 0, 0, 0, 0], 7, 5).any()
    assert codec.bbox(empty) is None and codec.to_polygons(empty) == []


@pytest.mark.parametrize("points, message", [
    ([1, 0, 0, 0], "at least 5"),
    ([1.5, 0, 0, 0, 0], "integers"),
    ([2, 0, 0, 0, 0], "cover 2 pixels"),
    ([1, 0, 0, 9, 0], "does not fit"),
    ([-1, 2, 0, 0, 0, 0], "non-negative"),
])
def test_bad_rle_is_refused_like_the_sdk(points, message):
    with pytest.raises(ValueError, match=message):
        codec.from_rle(points, 5, 5)
    with pytest.raises(ValueError):
        decode_mask(points, image_width=5, image_height=5)


def test_bad_detector_masks_are_refused():
    with pytest.raises(ValueError, match="needs"):
        codec.from_detector_mask([1, 0, 0], 4, 4)
    with pytest.raises(ValueError, match="bitmap has 3 values"):
        codec.from_detector_mask([1, 1, 1, 0, 0, 1, 1], 4, 4)


def test_resize_maps_pixel_centres():
    mask = np.zeros((4, 6), bool)
    mask[1:3, 2:4] = True
    up = codec.resize_mask(mask, 12, 8)
    assert up.shape == (8, 12) and up.sum() == mask.sum() * 4
    assert np.array_equal(codec.resize_mask(up, 6, 4), mask)
    assert codec.resize_mask(mask, 6, 4) is mask
