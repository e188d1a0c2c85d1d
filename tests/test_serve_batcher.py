"""The micro-batcher alone: what is coalesced with what, limits, errors, the bounded queue."""

from __future__ import annotations

import asyncio
import threading

import pytest

from facegen.serve.batcher import MicroBatcher, QueueFull


class Recorder:
    """A handler that doubles numbers and remembers every batch it was given."""

    def __init__(self, gate: threading.Event | None = None):
        self.calls: list[tuple] = []
        self.gate, self.entered = gate, threading.Event()

    def __call__(self, key, payloads):
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(10)
        self.calls.append((key, list(payloads)))
        if key == "boom":
            raise ValueError("handler failed")
        return [2 * p for p in payloads]


async def until(condition) -> None:
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("timed out")


async def held_then_burst(batcher: MicroBatcher, gate: threading.Event, jobs: list[tuple]) -> list:
    """Submit one job that holds the worker, queue `jobs` behind it, then let everything run."""
    first = asyncio.ensure_future(batcher.submit("hold", 0))
    await until(batcher.handler.entered.is_set)     # the worker has taken "hold" and waits on the gate
    rest = [asyncio.ensure_future(batcher.submit(key, p)) for key, p in jobs]
    await until(lambda: batcher.pending == len(jobs))
    gate.set()
    return await asyncio.gather(first, *rest, return_exceptions=True)


def test_only_equal_keys_share_a_batch_and_results_go_to_their_callers():
    gate = threading.Event()
    handler = Recorder(gate)
    batcher = MicroBatcher(handler, max_batch=8, window_ms=1)
    jobs = [("a", 1), ("b", 10), ("a", 2), ("b", 20), ("a", 3)]
    results = asyncio.run(held_then_burst(batcher, gate, jobs))
    batcher.close()
    assert results == [0, 2, 20, 4, 40, 6]
    assert handler.calls == [("hold", [0]), ("a", [1, 2, 3]), ("b", [10, 20])]
    assert batcher.stats.batches == 3 and batcher.stats.items == 6 and batcher.stats.largest == 3


def test_max_batch_splits_a_burst():
    gate = threading.Event()
    handler = Recorder(gate)
    batcher = MicroBatcher(handler, max_batch=2, window_ms=1)
    results = asyncio.run(held_then_burst(batcher, gate, [("a", i) for i in range(1, 6)]))
    batcher.close()
    assert results == [0, 2, 4, 6, 8, 10]
    assert [len(p) for _, p in handler.calls] == [1, 2, 2, 1]


def test_a_failing_batch_fails_only_its_own_requests():
    gate = threading.Event()
    batcher = MicroBatcher(Recorder(gate), max_batch=8, window_ms=1)
    results = asyncio.run(held_then_burst(batcher, gate, [("boom", 1), ("a", 5), ("boom", 2)]))
    batcher.close()
    assert results[2] == 10
    assert all(isinstance(results[i], ValueError) for i in (1, 3))


def test_full_queue_raises_at_once():
    gate = threading.Event()
    batcher = MicroBatcher(Recorder(gate), max_batch=1, window_ms=0, queue_size=2)

    async def scenario():
        held = asyncio.ensure_future(batcher.submit("hold", 0))
        await until(batcher.handler.entered.is_set)
        queued = [asyncio.ensure_future(batcher.submit("a", i)) for i in (1, 2)]
        await until(lambda: batcher.pending == 2)
        with pytest.raises(QueueFull):
            await batcher.submit("a", 3)
        gate.set()
        return await asyncio.gather(held, *queued)

    assert asyncio.run(scenario()) == [0, 2, 4]
    batcher.close()


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        MicroBatcher(Recorder(), max_batch=0)
