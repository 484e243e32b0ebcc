"""CVAT's nuclio payloads: the protocol facts, and strict parsing of every request field.

Facts (CVAT ``cvat/apps/lambda_manager/views.py``; see docs/cvat.md for what was read):
``image`` is standard padded base64 of the stored frame (PNG for video tasks, the uploaded file
for image tasks); points are ``[[x, y], ...]`` in image pixels; ``obj_bbox`` is ``null`` or
``[[x1, y1], [x2, y2]]``; tracker ``shapes``/``states`` are lists padded with ``null``. Anything
malformed raises :class:`RequestError` carrying the HTTP status to answer with.
"""
from __future__ import annotations

import base64
import binascii
import io
import json
import math
import reprlib
import warnings
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

#: nuclio HTTP trigger limit in CVAT's function.yaml files (maxRequestBodySize)
MAX_BODY_BYTES = 32 * 2**20
#: decoded frames larger than this are refused (decompression bombs)
MAX_PIXELS = 80_000_000
DATA_URL_SEPARATOR = ";base64,"
#: how request values are quoted in error messages: a short, shallow excerpt (bodies may nest deeply)
_QUOTE = reprlib.Repr()
_QUOTE.maxlevel, _QUOTE.maxlist, _QUOTE.maxdict, _QUOTE.maxstring, _QUOTE.maxother = 3, 6, 4, 40, 40


def shown(value: Any) -> str:
    """A request value quoted for an error message, however large or deeply nested."""
    return _QUOTE.repr(value)


class RequestError(Exception):
    """A request CVAT (or a caller) sent that cannot be served; ``status`` is the HTTP code."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def parse_body(body: Any) -> dict:
    """The JSON object of a request: nuclio passes a dict for JSON requests, bytes/str otherwise."""
    if isinstance(body, (bytes, bytearray, str)):
        if len(body) > MAX_BODY_BYTES:
            raise RequestError(f"request body is {len(body)} bytes, more than {MAX_BODY_BYTES}", 413)
        if not body:
            raise RequestError("request body is empty: send a JSON object")
        try:
            body = json.loads(body)
        except (ValueError, UnicodeDecodeError) as err:
            raise RequestError(f"request body is not JSON ({err})") from None
        except RecursionError:
            raise RequestError("request body nests too deeply to be a CVAT request") from None
    if not isinstance(body, dict):
        raise RequestError(f"request body must be a JSON object, got {type(body).__name__}")
    return body


def require(body: dict, key: str) -> Any:
    if key not in body or body[key] is None:
        raise RequestError(f"missing mandatory key {key!r}")
    return body[key]


def decode_image(value: Any) -> np.ndarray:
    """base64 PNG/JPEG/... -> uint8 RGB ``[H, W, 3]``."""
    if not isinstance(value, str):
        raise RequestError(f"'image' must be a base64 string, got {type(value).__name__}")
    if len(value) > MAX_BODY_BYTES:
        raise RequestError(f"'image' is {len(value)} bytes of base64, more than {MAX_BODY_BYTES}", 413)
    if DATA_URL_SEPARATOR in value[:64]:
        value = value.split(DATA_URL_SEPARATOR, 1)[1]
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError("'image' is not valid base64") from None
    if not raw:
        raise RequestError("'image' is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(raw)) as picture:
                if picture.width * picture.height > MAX_PIXELS:
                    size = f"{picture.width}x{picture.height}"
                    raise RequestError(f"'image' is {size}, more than {MAX_PIXELS} pixels", 413)
                return np.asarray(picture.convert("RGB"))
    except (UnidentifiedImageError, Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise RequestError("'image' is not a readable image (PNG, JPEG, ...)") from None
    except (OSError, ValueError, SyntaxError) as err:
        raise RequestError(f"'image' could not be decoded ({err})") from None


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RequestError(f"{what} must be a finite number, got {shown(value)}")
    return float(value)


def _inside(x: float, y: float, width: int, height: int, what: str) -> None:
    if not (0 <= x <= width and 0 <= y <= height):
        raise RequestError(f"{what} ({x:g}, {y:g}) is outside the {width}x{height} image")


def parse_points(value: Any, width: int, height: int, what: str) -> list[tuple[float, float]]:
    """``[[x, y], ...]`` inside the image (``null`` counts as no points)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise RequestError(f"{what} must be a list of [x, y] pairs")
    points = []
    for item in value:
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            raise RequestError(f"{what} must be a list of [x, y] pairs, got {shown(item)}")
        x, y = _number(item[0], f"{what} x"), _number(item[1], f"{what} y")
        _inside(x, y, width, height, f"{what[:-1] if what.endswith('s') else what}")
        points.append((x, y))
    return points


def parse_box(value: Any, width: int, height: int, what: str = "obj_bbox") -> tuple[float, float, float, float] | None:
    """``null``/``[]`` (no box), ``[[x1, y1], [x2, y2]]`` or ``[x1, y1, x2, y2]`` -> ordered box."""
    if value is None or (isinstance(value, list) and not value):
        return None
    if isinstance(value, list) and len(value) == 2 and all(isinstance(p, (list, tuple)) for p in value):
        flat = [*value[0], *value[1]]
    elif isinstance(value, list):
        flat = value
    else:
        raise RequestError(f"{what} must be [[x1, y1], [x2, y2]]")
    if len(flat) != 4:
        raise RequestError(f"{what} must hold two corners, got {shown(value)}")
    x1, y1, x2, y2 = (_number(v, what) for v in flat)
    for x, y in ((x1, y1), (x2, y2)):
        _inside(x, y, width, height, f"{what} corner")
    x0, x1 = sorted((x1, x2))
    y0, y1 = sorted((y1, y2))
    if x1 - x0 < 1 or y1 - y0 < 1:
        raise RequestError(f"{what} {shown(value)} is empty: draw a box at least one pixel wide and high")
    return x0, y0, x1, y1


def parse_threshold(value: Any) -> float | None:
    if value is None:
        return None
    threshold = _number(value, "threshold")
    if not 0 <= threshold <= 1:
        raise RequestError(f"threshold must be between 0 and 1, got {threshold:g}")
    return threshold


def parse_list(value: Any, what: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise RequestError(f"{what!r} must be a list")
    return value


__all__ = ["RequestError", "shown", "parse_body", "require", "decode_image", "parse_points", "parse_box",
           "parse_threshold",
           "parse_list", "MAX_BODY_BYTES"]
