"""A background loader: prepares what a loop will ask for next (e.g. decoded, resized frames).

`Prefetcher(load, ahead)` runs `load(key)` on one worker thread for the keys of a plan, at most
`ahead` keys beyond the one last asked for, so memory stays bounded. `get(key)` returns the
result, waiting while it loads, or loading inline when it was not planned or when the load ahead
failed: a source that is not readable ahead (a stream still growing) gets another try, and a real
error is raised in the caller. `close()` cancels the loads not started and waits for the one
running, so nothing touches the source after it returns.
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Generic, Hashable, Iterable, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

THREAD_NAME = "auralsam2-prefetch"


class Prefetcher(Generic[K, V]):
    """Loads the keys of a plan ahead of their use on one background thread (see the module docstring)."""

    def __init__(self, load: Callable[[K], V], ahead: int = 2) -> None:
        self._load = load
        self._ahead = max(1, int(ahead))
        self._executor: ThreadPoolExecutor | None = None
        self._plan: list[K] = []
        self._cursor = 0  # plan index after the key last asked for
        self._next = 0  # plan index of the next key to submit
        self._futures: dict[K, Future] = {}

    def plan(self, keys: Iterable[K]) -> None:
        """Load these keys, in this order, from now on (repeats in a row count once)."""
        self.close()
        for key in keys:
            if not self._plan or self._plan[-1] != key:
                self._plan.append(key)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=THREAD_NAME)
        self._fill()

    def get(self, key: K) -> V:
        """The loaded value of `key`; a load error is raised here."""
        future = self._futures.pop(key, None)
        index = self._index(key)
        if index is not None:
            for skipped in self._plan[self._cursor:index]:  # asked out of order: drop what was passed over
                stale = self._futures.pop(skipped, None)
                if stale is not None:
                    stale.cancel()
            self._cursor = index + 1
            self._next = max(self._next, self._cursor)
            self._fill()
        if future is not None:
            try:
                return future.result()
            except Exception:  # read too early, or a real error: the caller's own try says which
                pass
        return self._load(key)

    def _index(self, key: K) -> int | None:
        """Where `key` comes next in the active plan (None: no plan, or not in what is left of it)."""
        if self._executor is None:
            return None
        try:
            return self._plan.index(key, self._cursor)
        except ValueError:
            return None

    def close(self) -> None:
        """Cancel pending loads and wait for the running one; `get` then loads inline."""
        for future in self._futures.values():
            future.cancel()
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
        self._executor = None
        self._futures.clear()
        self._plan, self._cursor, self._next = [], 0, 0

    def _fill(self) -> None:
        while len(self._futures) < self._ahead and self._next < len(self._plan):
            key = self._plan[self._next]
            self._next += 1
            if key not in self._futures:
                self._futures[key] = self._executor.submit(self._load, key)
