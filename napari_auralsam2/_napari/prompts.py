"""Prompt layers: a Points layer for positive/negative clicks and a Shapes layer for boxes.

Each point and box carries an `object_id` feature (and points a `label`), set from the layers'
feature defaults, which the widget keeps in step with its object-id box and polarity toggle.
napari puts pixel centres at integer coordinates; SAM2 at +0.5, hence `PIXEL_CENTRE`.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from napari.layers import Image, Points, Shapes

from ..core.objects import Prompts
from ..core.session import Prompt

POSITIVE, NEGATIVE = "positive", "negative"
LABEL_COLOURS = {POSITIVE: "lime", NEGATIVE: "red"}
BOX_COLOUR = "yellow"
POINT_SIZE = 10
BOX_EDGE_WIDTH = 2
TEXT_SIZE = 10
PIXEL_CENTRE = 0.5
POINTS_SUFFIX = " clicks"
BOXES_SUFFIX = " boxes"


def _text() -> dict:
    return {"string": "{object_id}", "color": "white", "size": TEXT_SIZE, "anchor": "upper_left"}


def _geometry(video: Image) -> dict:
    """Scale/translate of the video's (T, Y, X) axes, so prompt data coordinates are frame pixels."""
    return {"scale": tuple(video.scale[:3]), "translate": tuple(video.translate[:3])}


def make_points_layer(video: Image, object_id: int, positive: bool = True) -> Points:
    features = pd.DataFrame({"label": pd.Categorical([], categories=[POSITIVE, NEGATIVE]),
                             "object_id": pd.Series([], dtype=np.int64)})
    return Points(ndim=3, name=video.name + POINTS_SUFFIX, features=features,
                  feature_defaults=defaults(object_id, positive), face_color="label",
                  face_color_cycle=LABEL_COLOURS, border_color="white", size=POINT_SIZE, text=_text(),
                  **_geometry(video))


def make_boxes_layer(video: Image, object_id: int) -> Shapes:
    features = pd.DataFrame({"object_id": pd.Series([], dtype=np.int64)})
    return Shapes(ndim=3, name=video.name + BOXES_SUFFIX, features=features,
                  feature_defaults={"object_id": object_id}, edge_color=BOX_COLOUR, face_color="transparent",
                  edge_width=BOX_EDGE_WIDTH, text=_text(), **_geometry(video))


def remove_object(points: Points | None, boxes: Shapes | None, object_id: int) -> None:
    """Delete an object's clicks and boxes from the prompt layers."""
    for layer in (points, boxes):
        if layer is not None and len(layer.data):
            rows = np.flatnonzero(layer.features["object_id"].to_numpy() == object_id)
            if rows.size:
                layer.selected_data = set(rows.tolist())
                layer.remove_selected()


def clear_all(points: Points | None, boxes: Shapes | None) -> None:
    """Delete every click and box."""
    for layer in (points, boxes):
        if layer is not None and len(layer.data):
            layer.selected_data = set(range(len(layer.data)))
            layer.remove_selected()


def defaults(object_id: int, positive: bool) -> dict:
    return {"label": POSITIVE if positive else NEGATIVE, "object_id": int(object_id)}


def collect_prompts(points: Points | None, boxes: Shapes | None, width: int, height: int) -> tuple[Prompts, list[str]]:
    """Every prompt in the layers grouped by frame and object, plus warnings about ignored input."""
    prompts: Prompts = {}
    warnings: list[str] = []
    if points is not None and len(points.data):
        ids = points.features["object_id"].to_numpy()
        polarity = points.features["label"].astype(str).to_numpy()
        for (t, y, x), obj, label in zip(points.data, ids, polarity):
            frame = int(round(t))
            prompt = prompts.setdefault(frame, {}).setdefault(int(obj), Prompt(frame, int(obj)))
            prompt.points.append((float(x) + PIXEL_CENTRE, float(y) + PIXEL_CENTRE))  # outside: the core says so
            prompt.labels.append(1 if label == POSITIVE else 0)
    if boxes is not None and len(boxes.data):
        for vertices, obj in zip(boxes.data, boxes.features["object_id"].to_numpy()):
            t = int(round(float(vertices[0, 0])))
            (y0, x0), (y1, x1) = vertices[:, 1:].min(axis=0), vertices[:, 1:].max(axis=0)
            prompt = prompts.setdefault(t, {}).setdefault(int(obj), Prompt(t, int(obj)))
            if prompt.box is not None:
                warnings.append(f"object {obj} has several boxes on frame {t}: only the last one is used")
            prompt.box = (_clip(x0 + PIXEL_CENTRE, width), _clip(y0 + PIXEL_CENTRE, height),
                          _clip(x1 + PIXEL_CENTRE, width), _clip(y1 + PIXEL_CENTRE, height))
    return prompts, warnings


def _clip(value: float, limit: int) -> float:
    return float(min(max(value, 0.0), float(limit)))
