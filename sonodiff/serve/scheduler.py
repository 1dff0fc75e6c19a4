"""The service's work queue: bounded, micro-batched across clients, cancellable, with per-request deadlines.

Every model call runs on the scheduler's worker thread(s), never on the web server's event loop. A *job* is one
clip (one prompt and seed) with its model and sampling settings. A worker takes the oldest waiting job, waits up to
``batch_wait_s`` for more jobs with the same model and settings (the *batch key*), and runs them as one
:class:`~sonodiff.pipelines.Pipeline` call: sample k depends only on its own prompt and seed, so a micro-batched
clip equals the clip generated alone. A stream job (long-form audio, :meth:`Pipeline.stream`) is advanced one window
per turn and then goes to the back of the queue, so streams and batches share the workers fairly.

Cancellation: a job whose client went away (``Job.cancel``) or whose deadline passed is dropped before it runs; a
running batch stops at the next sampler step once none of its jobs is still wanted (the sampler's callback raises).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Cancelled", "DeadlineExceeded", "Job", "QueueFull", "Scheduler", "StreamJob"]

_log = logging.getLogger(__name__)


class QueueFull(RuntimeError):
    """The bounded queue holds ``max_queue`` jobs already (HTTP 503 with Retry-After)."""

    def __init__(self, size: int, retry_after_s: float):
        super().__init__(f"the queue is full ({size} jobs waiting); retry in about {retry_after_s:.0f} s")
        self.size, self.retry_after_s = size, retry_after_s


class Cancelled(RuntimeError):
    """The job's client cancelled it (disconnected) before it finished."""


class DeadlineExceeded(RuntimeError):
    """The job did not finish within its time limit."""


_ids = itertools.count()


@dataclass(eq=False)
class Job:
    """One clip: ``prompt`` (``None`` for an unconditional model), ``seed`` and sampling ``settings`` (keyword
    arguments of :meth:`Pipeline.__call__`: ``duration_s``, ``num_steps``, ``guidance_scale``, ``sampler``).
    ``future`` resolves to ``(audio [C, T], sample_rate)``."""

    model: str
    prompt: str | None
    seed: int
    settings: dict
    timeout_s: float | None = None
    future: Future = field(default_factory=Future)
    id: int = field(default_factory=lambda: next(_ids))
    enqueued: float = field(default_factory=time.monotonic)
    started: float | None = None
    _cancelled: threading.Event = field(default_factory=threading.Event)

    @property
    def key(self) -> tuple:
        return ("clip", self.model, tuple(sorted((k, repr(v)) for k, v in self.settings.items())))

    @property
    def deadline(self) -> float:
        return float("inf") if self.timeout_s is None else self.enqueued + self.timeout_s

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def wanted(self, now: float | None = None) -> bool:
        return not self.cancelled and (now or time.monotonic()) < self.deadline and not self.future.done()

    def fail_unwanted(self) -> None:
        if self.future.done():
            return
        if self.cancelled:
            self.future.set_exception(Cancelled(f"job {self.id} was cancelled"))
        else:
            self.future.set_exception(DeadlineExceeded(f"job {self.id} did not finish within {self.timeout_s} s"))


@dataclass(eq=False)
class StreamJob(Job):
    """Long-form audio: ``chunks(audio [C, t] | None, error | None)`` is called from the worker for every window
    produced and once with ``(None, None)`` at the end (or ``(None, error)``)."""

    on_chunk: Callable[[Any, BaseException | None], None] | None = None
    iterator: Iterator | None = None
    chunks_sent: int = 0

    @property
    def key(self) -> tuple:
        return ("stream", self.id)


class _Abort(Exception):
    pass


class Scheduler:
    """Run jobs on ``workers`` threads against ``pipelines`` (``name -> Pipeline``).

    ``max_queue``: waiting jobs beyond this raise :class:`QueueFull`. ``max_batch``: clips per network call
    (1 = no micro-batching: requests served one by one). ``batch_wait_s``: how long the first job of a batch waits
    for companions (only while the worker has nothing else to do)."""

    def __init__(self, pipelines: dict, *, max_queue: int = 32, max_batch: int = 8, batch_wait_s: float = 0.02,
                 workers: int = 1) -> None:
        if max_queue < 1 or max_batch < 1 or workers < 1 or batch_wait_s < 0:
            raise ValueError(f"need max_queue, max_batch, workers >= 1 and batch_wait_s >= 0; got {max_queue}, "
                             f"{max_batch}, {workers}, {batch_wait_s}")
        self.pipelines = pipelines
        self.max_queue, self.max_batch, self.batch_wait_s = max_queue, max_batch, batch_wait_s
        self._queue: deque[Job] = deque()
        self._cv = threading.Condition()
        self._closed = False
        self._busy = 0
        self.stats = {"submitted": 0, "completed": 0, "cancelled": 0, "timed_out": 0, "failed": 0, "batches": 0,
                      "rows": 0, "aborted_batches": 0, "stream_chunks": 0, "sampler_steps": 0}
        self._recent: deque[float] = deque(maxlen=32)  # seconds per batch, for Retry-After
        self._threads = [threading.Thread(target=self._work, name=f"sonodiff-worker-{i}", daemon=True)
                         for i in range(workers)]
        for t in self._threads:
            t.start()

    # ------------------------------------------------------------------ client side
    def submit(self, job: Job) -> Job:
        if job.model not in self.pipelines:
            raise KeyError(job.model)
        with self._cv:
            if self._closed:
                raise RuntimeError("the scheduler is shut down")
            waiting = sum(1 for j in self._queue if not j.cancelled)
            if waiting >= self.max_queue:
                raise QueueFull(waiting, self.retry_after_s())
            self._queue.append(job)
            self.stats["submitted"] += 1
            self._cv.notify()
        return job

    def retry_after_s(self) -> float:
        per = sum(self._recent) / len(self._recent) if self._recent else 1.0
        return max(1.0, per * (len(self._queue) / self.max_batch + 1))

    @property
    def waiting(self) -> int:
        with self._cv:
            return sum(1 for j in self._queue if not j.cancelled)

    @property
    def busy(self) -> int:
        return self._busy

    def close(self, timeout: float = 5.0) -> None:
        with self._cv:
            self._closed = True
            for j in self._queue:
                j.cancel()
            self._cv.notify_all()
        for t in self._threads:
            t.join(timeout)

    # ------------------------------------------------------------------ worker side
    def _take(self) -> list[Job] | None:
        with self._cv:
            while True:
                self._drop_unwanted()
                if self._queue:
                    break
                if self._closed:
                    return None
                self._cv.wait(0.1)
            first = self._queue.popleft()
            batch = [first]
            if isinstance(first, StreamJob):
                return batch
            until = time.monotonic() + self.batch_wait_s
            while len(batch) < self.max_batch:
                for j in list(self._queue):
                    if len(batch) >= self.max_batch:
                        break
                    if j.key == first.key and j.wanted():
                        self._queue.remove(j)
                        batch.append(j)
                left = until - time.monotonic()
                if len(batch) >= self.max_batch or left <= 0 or self._closed:
                    break
                self._cv.wait(left)
            self._busy += 1
            return batch

    def _drop_unwanted(self) -> None:
        now = time.monotonic()
        for j in [j for j in self._queue if not j.wanted(now)]:
            self._queue.remove(j)
            self._count_unwanted(j)

    def _count_unwanted(self, j: Job) -> None:
        if j.future.done() and not isinstance(j, StreamJob):
            return
        self.stats["cancelled" if j.cancelled else "timed_out"] += 1
        j.fail_unwanted()
        if isinstance(j, StreamJob) and j.on_chunk is not None:
            try:
                j.on_chunk(None, j.future.exception())
            except Exception as e:  # noqa: BLE001 - a client callback must not stop the worker
                _log.warning("stream callback of job %s failed: %s", j.id, e)

    def _work(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            t0 = time.monotonic()
            try:
                if isinstance(batch[0], StreamJob):
                    self._step_stream(batch[0])
                else:
                    self._run_batch(batch)
            finally:
                with self._cv:
                    self._busy = max(0, self._busy - (0 if isinstance(batch[0], StreamJob) else 1))
                self._recent.append(time.monotonic() - t0)

    def _run_batch(self, jobs: list[Job]) -> None:
        now = time.monotonic()
        for j in jobs:
            j.started = now
        pipe = self.pipelines[jobs[0].model]
        s = dict(jobs[0].settings)

        def check(info) -> None:
            self.stats["sampler_steps"] += 1
            now = time.monotonic()
            if not any(j.wanted(now) for j in jobs):
                raise _Abort()

        try:
            if pipe.takes_prompt:
                gen = pipe([j.prompt for j in jobs], seeds=[j.seed for j in jobs], callback=check, **s)
            else:
                gen = pipe(None, num_per_prompt=len(jobs), seeds=[j.seed for j in jobs], callback=check, **s)
        except _Abort:
            self.stats["aborted_batches"] += 1
            for j in jobs:
                self._count_unwanted(j)
            return
        except Exception as e:  # noqa: BLE001 - reported to every client of the batch, the server keeps running
            self.stats["failed"] += len(jobs)
            for j in jobs:
                if not j.future.done():
                    j.future.set_exception(e)
            return
        self.stats["batches"] += 1
        self.stats["rows"] += len(jobs)
        for k, j in enumerate(jobs):
            if j.wanted():
                j.future.set_result((gen.audio[k], gen.sample_rate))
                self.stats["completed"] += 1
            else:
                self._count_unwanted(j)

    def _step_stream(self, job: StreamJob) -> None:
        if not job.wanted():
            self._count_unwanted(job)
            return
        if job.started is None:
            job.started = time.monotonic()
        try:
            if job.iterator is None:
                pipe = self.pipelines[job.model]
                s = dict(job.settings)
                duration = s.pop("duration_s")
                s.pop("format", None)
                job.iterator = pipe.stream([job.prompt] if job.prompt is not None else None, duration_s=duration,
                                           seeds=[job.seed], **s)
            chunk = next(job.iterator)
        except StopIteration:
            job.future.set_result(job.chunks_sent)
            self.stats["completed"] += 1
            job.on_chunk(None, None)
            return
        except Exception as e:  # noqa: BLE001
            self.stats["failed"] += 1
            job.future.set_exception(e)
            job.on_chunk(None, e)
            return
        job.chunks_sent += 1
        self.stats["stream_chunks"] += 1
        job.on_chunk(chunk[0], None)
        with self._cv:  # the next window waits its turn behind what arrived meanwhile
            if self._closed:
                job.cancel()
            self._queue.append(job)
            self._cv.notify()
