"""One thread owns the models; jobs wait in a bounded queue and can be cancelled.

Two generations at once on a few CPU cores only slow each other down, and a torch model is not
meant to be driven from several threads mid-sampling, so the server runs every job in one worker
thread, in arrival order, whichever of the server's models (loaded once each) the job names. The
queue is bounded: a flood of requests gets an immediate "busy, retry after N seconds" instead of
a wait that grows without end. A job whose client went away is cancelled: it is skipped if it
has not started, or stops at its next sampler step.
"""

import math
import queue
import threading
import time
from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable

from .errors import DiffuseError
from .pipeline import GenerateRequest, Pipeline
from .samplers import Step


class QueueFull(Exception):
    """The queue holds as many waiting jobs as it may; `retry_after` estimates when to come back."""

    def __init__(self, retry_after: int):
        super().__init__(f"the server is busy: retry after {retry_after} s")
        self.retry_after = retry_after


class JobCancelled(Exception):
    """Raised from the sampler callback to abandon a job in the middle of sampling."""


@dataclass(eq=False)
class Job:
    request: GenerateRequest
    pipe: Pipeline                                  # the model that draws it
    on_step: Callable[[Step], None] | None = None  # called in the worker thread after each step
    future: Future = field(default_factory=Future)  # the images, or the exception that stopped the job
    cancelled: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        """Safe from any thread and at any time; a finished job is unaffected."""
        self.cancelled.set()
        self.future.cancel()  # only succeeds while the job still waits


class Worker:
    def __init__(self, queue_size: int):
        if not isinstance(queue_size, int) or queue_size < 1:
            raise DiffuseError(f"queue size must be at least 1, got {queue_size!r}")
        self.queue_size = queue_size
        self.queue: queue.Queue[Job | None] = queue.Queue(maxsize=queue_size)
        self.counts = Counter(done=0, failed=0, cancelled=0, rejected=0)
        self.running: Job | None = None
        self.mean_seconds = 1.0  # moving average of a job's run time, for Retry-After
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def submit(self, job: Job) -> Job:
        """Queue a job (starting the thread on first use), or raise QueueFull at once."""
        self._start()
        try:
            self.queue.put_nowait(job)
        except queue.Full:
            self.counts["rejected"] += 1
            raise QueueFull(self.retry_after()) from None
        return job

    def retry_after(self) -> int:
        """Seconds until a place in the queue is likely free: the jobs ahead times their mean time."""
        return max(1, math.ceil(self.mean_seconds * (self.queue.qsize() + 1)))

    def status(self) -> dict:
        return {"running": self.running is not None, "waiting": self.queue.qsize(), "queue_size": self.queue_size,
                "jobs": dict(self.counts)}

    def stop(self) -> None:
        """Cancel the running and waiting jobs and end the thread (server shutdown)."""
        if self.running is not None:
            self.running.cancel()
        while True:
            try:
                job = self.queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job.cancel()
        if self._thread is not None:
            self.queue.put(None)
            self._thread.join(timeout=10)
            self._thread = None

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="diffuse-worker", daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        while (job := self.queue.get()) is not None:
            self._run(job)

    def _run(self, job: Job) -> None:
        if job.cancelled.is_set() or not job.future.set_running_or_notify_cancel():
            self.counts["cancelled"] += 1
            return
        self.running, start = job, time.perf_counter()
        try:
            images = job.pipe.generate(job.request, callback=lambda step: self._step(job, step))
        except JobCancelled as e:
            self.counts["cancelled"] += 1
            job.future.set_exception(e)
        except Exception as e:  # handed to whoever waits: a DiffuseError becomes a 400, anything else a 500
            self.counts["failed"] += 1
            job.future.set_exception(e)
        else:
            self.counts["done"] += 1
            self.mean_seconds = 0.8 * self.mean_seconds + 0.2 * (time.perf_counter() - start)
            job.future.set_result(images)
        finally:
            self.running = None

    @staticmethod
    def _step(job: Job, step: Step) -> None:
        if job.cancelled.is_set():
            raise JobCancelled("the client went away")
        if job.on_step is not None:
            job.on_step(step)

