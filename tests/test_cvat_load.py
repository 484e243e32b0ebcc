"""Load test of the nuclio handlers: 1000 mixed good and bad requests from several threads.

Bound: after a 300-request warm-up (which fills the tracker's LRU), the next 700 requests may grow
the process's resident memory by at most RSS_BOUND_MB = 64 MB (measured: ~30 MB, flat after
~1000 requests in a 3000-request probe); the tracker keeps at most CAPACITY sessions.
"""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import psutil
import pytest
from nuclio_sdk import Event

from ._cvat_support import TEST_ENV, encode, start_functions, tiny_engine

REQUESTS = 1000
WARM_UP = 300  # fills the tracker's LRU and the allocators' steady state
THREADS = 6
GOOD_EVERY = 40  # 25 good requests (model runs), the rest malformed
RSS_BOUND_MB = 64
CAPACITY = 3
TINY = np.random.default_rng(5).integers(0, 255, (32, 32, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def served(tmp_path_factory, sample_mp4):
    tiny_engine()
    volume = tmp_path_factory.mktemp("videos")
    (volume / "source.mp4").write_bytes(sample_mp4.read_bytes())
    env = dict(TEST_ENV, AURALSAM2_VIDEOS=str(volume), AURALSAM2_INDEX_CACHE="",
               AURALSAM2_TRACKER_CAPACITY=str(CAPACITY))
    return start_functions(env)


def requests() -> list[tuple[str, object, set[int]]]:
    """(function, body, acceptable statuses) for every request, deterministic."""
    image = encode(TINY)
    unknown_state = {"id": "a" * 32, "step": 2}
    bad = [
        ("interactor", b"{", {400}),
        ("interactor", b"x" * (32 * 2**20 + 1), {413}),
        ("interactor", {"image": "%%%", "pos_points": [[1, 1]], "neg_points": []}, {400}),
        ("interactor", {"image": "aGVsbG8=", "pos_points": [[1, 1]], "neg_points": []}, {400}),
        ("interactor", {"image": image, "pos_points": [[99, 1]], "neg_points": []}, {400}),
        ("interactor", {"image": image, "neg_points": []}, {400}),
        ("interactor", {"image": image, "pos_points": [], "neg_points": [], "obj_bbox": [[1, 1], [1, 1]]}, {400}),
        ("tracker", {"image": image, "shapes": [None], "states": [unknown_state]}, {410}),
        ("tracker", {"image": image, "shapes": [{"type": "cuboid", "points": []}], "states": []}, {400}),
        ("tracker", {"image": image, "shapes": [None], "states": ["x"]}, {400}),
        ("tracker", [], {400}),
        ("detector", {"image": image}, {500}),  # not a frame of the mounted video
        ("detector", {"threshold": "high", "image": image}, {400}),
        ("detector", {}, {400}),
    ]
    good = [
        ("interactor", {"image": image, "pos_points": [[16.0, 16.0]], "neg_points": [], "obj_bbox": None}, {200}),
        ("tracker", {"image": image, "shapes": [[4.0, 4.0, 20.0, 20.0]], "states": []}, {200}),
    ]
    plan = []
    for i in range(REQUESTS):
        plan.append(good[(i // GOOD_EVERY) % len(good)] if i % GOOD_EVERY == 0 else bad[i % len(bad)])
    return plan


def test_thousand_mixed_requests_from_threads(served):
    platform, mains = served
    plan = requests()

    def send(item):
        kind, body, allowed = item
        response = platform.call_handler(mains[kind].handler, Event(body=body))
        payload = json.loads(response.body)
        return response.status_code, allowed, payload

    process = psutil.Process()
    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(send, plan[:WARM_UP]))
        before = process.memory_info().rss
        results += list(pool.map(send, plan[WARM_UP:]))
        after = process.memory_info().rss
    assert len(results) == REQUESTS
    for status, allowed, payload in results:
        assert status in allowed, payload
        assert ("error" in payload) == (status != 200)
    assert sum(status == 200 for status, _, _ in results) == REQUESTS // GOOD_EVERY
    tracker = platform._get_handler_context(mains["tracker"].handler).user_data.model.tracker
    assert len(tracker.store) <= CAPACITY
    growth_mb = (after - before) / 2**20
    print(f"resident memory growth over {REQUESTS - WARM_UP} requests: {growth_mb:.1f} MB")
    assert growth_mb < RSS_BOUND_MB, f"resident memory grew by {growth_mb:.0f} MB over {REQUESTS - WARM_UP} requests"
