"""Dynamic batching: concurrent requests for one model become one engine call.

Each request is a ``Job`` (its encodings and how to turn their outputs into an answer). A worker takes the
first queued job, waits at most ``max_wait_s`` for more (only while requests keep company: a lone request
runs at once) until ``max_batch`` encodings are gathered, and runs
them together in a worker thread (grouped by length, so padding stays small); each job then finishes on its
own slice of the outputs. The queue is bounded: a full queue is refused at once (the server answers 503).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from zoo.pipelines.base import Job


class QueueFullError(Exception):
    """The model's queue is at its bound; the caller should retry later."""


@dataclass
class _Pending:
    job: Job
    future: asyncio.Future[Any]
    queued_at: float = field(default_factory=time.perf_counter)


@dataclass
class BatchStats:
    """What one engine call did, for the metrics."""

    requests: int
    encodings: int
    queue_seconds: list[float]
    run_seconds: float


class Batcher:
    """One model's queue and worker; ``submit`` returns the job's answer (or raises the job's error)."""

    def __init__(self, run: Callable[[list[Any]], list[dict[str, Any]]], max_batch: int, max_wait_s: float, max_queue: int,
                 on_batch: Callable[[BatchStats], None] | None = None) -> None:
        self.run, self.max_batch, self.max_wait_s = run, max(1, max_batch), max(0.0, max_wait_s)
        self.queue: asyncio.Queue[_Pending] = asyncio.Queue(maxsize=max(1, max_queue))
        self.on_batch = on_batch
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="zoo-batch")
        self._task: asyncio.Task[None] | None = None
        self._busy = False  # did the last batch find company? Only then is waiting for more worth its delay

    @property
    def depth(self) -> int:
        return self.queue.qsize()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._work())

    async def stop(self) -> None:
        """Finish what is queued, then stop the worker."""
        while not self.queue.empty():
            await asyncio.sleep(0.005)
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=True)

    async def submit(self, job: Job) -> Any:
        pending = _Pending(job, asyncio.get_running_loop().create_future())
        try:
            self.queue.put_nowait(pending)
        except asyncio.QueueFull:
            raise QueueFullError from None
        return await pending.future

    async def _gather(self) -> list[_Pending]:
        loop = asyncio.get_running_loop()
        batch = [await self.queue.get()]
        count = len(batch[0].job.encodings)
        # A lone request (the last batch was alone too) runs at once: under load, requests queue up while the
        # engine runs and are merged anyway, so waiting only pays when company is likely.
        deadline = loop.time() + (self.max_wait_s if self._busy or not self.queue.empty() else 0.0)
        while count < self.max_batch:
            try:
                item = self.queue.get_nowait()
            except asyncio.QueueEmpty:
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self.queue.get(), left)
                except TimeoutError:
                    break
            batch.append(item)
            count += len(item.job.encodings)
        self._busy = len(batch) > 1
        return [p for p in batch if not p.future.done()]  # a client that gave up costs nothing

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            if not batch:
                continue
            started = time.perf_counter()
            encodings = [e for p in batch for e in p.job.encodings]
            try:
                outputs = await loop.run_in_executor(self._executor, self.run, encodings)
            except Exception as exc:  # noqa: BLE001 - handed to every waiting request, which answers with it
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(exc)
                continue
            ran = time.perf_counter() - started
            at = 0
            for p in batch:
                part = outputs[at:at + len(p.job.encodings)]
                at += len(p.job.encodings)
                if p.future.done():
                    continue
                try:
                    p.future.set_result(p.job.finish(part))
                except Exception as exc:  # noqa: BLE001
                    p.future.set_exception(exc)
            if self.on_batch is not None:
                self.on_batch(BatchStats(len(batch), len(encodings), [started - p.queued_at for p in batch], ran))
