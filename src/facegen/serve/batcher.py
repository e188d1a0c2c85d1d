"""Micro-batching: requests that arrive within a short window run as one batch.

The event loop only enqueues work and awaits a future; one worker thread owns the model
and does every generation, so a slow batch never blocks other requests from being
accepted, and the model never runs from two threads at once. The queue is bounded: when
it is full, `submit` raises QueueFull at once (the app answers 503 with Retry-After)
instead of letting memory grow without limit.

Jobs carry a key; only jobs with equal keys are coalesced (faces with the same options
share a batch, a morph runs alone). The worker calls `handler(key, payloads)` which
returns one result per payload.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Sequence


class QueueFull(Exception):
    """The bounded queue is full; the caller should retry later."""


@dataclass
class _Job:
    key: Hashable
    payload: Any
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future


@dataclass
class BatchStats:
    batches: int = 0                                # handler calls so far
    items: int = 0                                  # jobs handled so far
    largest: int = 0                                # largest batch so far
    sizes: deque = field(default_factory=lambda: deque(maxlen=1000))  # recent batch sizes, newest last


class MicroBatcher:
    def __init__(
        self,
        handler: Callable[[Hashable, list[Any]], Sequence[Any]],
        max_batch: int = 8,                         # most jobs per handler call
        window_ms: float = 10.0,                    # how long the first job of a batch waits for company
        queue_size: int = 64,                       # most jobs waiting (not counting the running batch)
    ):
        if max_batch < 1 or queue_size < 1 or window_ms < 0:
            raise ValueError("max_batch and queue_size must be >= 1 and window_ms >= 0")
        self.handler = handler
        self.max_batch = max_batch
        self.window_s = window_ms / 1000
        self.queue_size = queue_size
        self.stats = BatchStats()
        self._queue: deque[_Job] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._work, name="facegen-batcher", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Jobs waiting in the queue (the batch being generated is not counted)."""
        with self._cond:
            return len(self._queue)

    async def submit(self, key: Hashable, payload: Any) -> Any:
        """Queue one job and wait for its result. Raises QueueFull when the queue is full."""
        loop = asyncio.get_running_loop()
        job = _Job(key, payload, loop, loop.create_future())
        with self._cond:
            if self._closed:
                raise RuntimeError("batcher is closed")
            if len(self._queue) >= self.queue_size:
                raise QueueFull(f"{len(self._queue)} requests waiting")
            self._queue.append(job)
            self._cond.notify()
        return await job.future

    def close(self) -> None:
        """Stop the worker after the batch in progress; waiting jobs are dropped."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=30)

    # -- worker thread -------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            self._run(batch)

    def _next_batch(self) -> list[_Job] | None:
        """Block for a first job, then gather jobs with its key until the window closes or the batch is full."""
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            first = self._queue.popleft()
            batch = [first]
            deadline = time.monotonic() + self.window_s
            while len(batch) < self.max_batch:
                batch.extend(self._take_matching(first.key, self.max_batch - len(batch)))
                remaining = deadline - time.monotonic()
                if len(batch) >= self.max_batch or remaining <= 0 or self._closed:
                    break
                self._cond.wait(remaining)
            return batch

    def _take_matching(self, key: Hashable, limit: int) -> list[_Job]:
        """Remove up to `limit` queued jobs with `key`, keeping the others in arrival order."""
        taken = [job for job in self._queue if job.key == key][:limit]
        for job in taken:
            self._queue.remove(job)
        return taken

    def _run(self, batch: list[_Job]) -> None:
        try:
            results = list(self.handler(batch[0].key, [job.payload for job in batch]))
            if len(results) != len(batch):
                raise RuntimeError(f"handler returned {len(results)} results for {len(batch)} jobs")
            outcomes = [(job, result, None) for job, result in zip(batch, results)]
        except Exception as e:  # handed to each waiting request, which answers with an error
            outcomes = [(job, None, e) for job in batch]
        self.stats.batches += 1
        self.stats.items += len(batch)
        self.stats.largest = max(self.stats.largest, len(batch))
        self.stats.sizes.append(len(batch))
        for job, result, error in outcomes:
            try:
                job.loop.call_soon_threadsafe(_resolve, job.future, result, error)
            except RuntimeError:  # that request's event loop has shut down: nobody is waiting
                pass


def _resolve(future: asyncio.Future, result: Any, error: Exception | None) -> None:
    if future.done():  # the client went away and the request was cancelled
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
