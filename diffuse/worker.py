"""One thread owns the models; jobs wait in a bounded queue and can be cancelled.

Two generations at once on a few CPU cores only slow each other down, and a torch model is not
meant to be driven from several threads mid-sampling, so the server runs every job in one worker
thread, in arrival order, whichever of the server's models (loaded once each) the job names. The
queue is bounded: a flood of requests gets an immediate "busy, retry after N seconds" instead of
a wait that grows without end. A job whose client went away is cancelled: it is skipped if it
has not started, or stops at its next sampler step.

Batching (issue 21). When the worker takes a text-to-image job, it also takes the waiting jobs
that could share its network passes: the same model and the same BATCH_SETTINGS (steps, sampler,
guidance, schedule, eta, size), up to `max_batch` images in all, and samples them together with
Pipeline.sample_batch, which gives each image exactly what sampling it alone gives (per-image
seeds). Each job still gets its own step events (its rows of the batch) and can be cancelled on
its own: a cancelled job is answered at once and its rows are finished unseen; the batch stops
only when every job in it is cancelled. Jobs are taken in arrival order; a job that cannot join
keeps its place.
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
from .pipeline import BATCH_SETTINGS, GenerateRequest, Pipeline
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

    @property
    def batchable(self) -> bool:
        r = self.request
        return r.init_image is None and not (r.variation_seed is not None and r.variation_strength > 0)

    def joins(self, other: "Job") -> bool:
        """Whether this job can share network passes with `other` (Pipeline.sample_batch)."""
        return (self.batchable and other.batchable and self.pipe is other.pipe
                and all(getattr(self.request, k) == getattr(other.request, k) for k in BATCH_SETTINGS))


class Worker:
    def __init__(self, queue_size: int, max_batch: int = 1):
        if not isinstance(queue_size, int) or queue_size < 1:
            raise DiffuseError(f"queue size must be at least 1, got {queue_size!r}")
        if not isinstance(max_batch, int) or max_batch < 1:
            raise DiffuseError(f"max batch must be at least 1, got {max_batch!r}")
        self.queue_size, self.max_batch = queue_size, max_batch
        self.batches = Counter()  # jobs per batch run -> how many such batches
        self.queue: queue.Queue[Job | None] = queue.Queue(maxsize=queue_size)
        self.counts = Counter(done=0, failed=0, cancelled=0, rejected=0)
        self.running: Job | None = None
        self.batch: list[Job] = []  # the jobs of the batch that runs, when several
        self.run_seconds: float | None = None  # moving average of a run's time (one job or a batch), for Retry-After
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
        """Seconds until a place in the queue is likely free: when the run now going ends, the
        worker takes the next job (or batch of up to max_batch jobs) out of the queue, so about
        one run's time, whatever the queue holds. (Jobs ahead times their mean time, the estimate
        before, told clients to stay away while a batch emptied the queue: benchmarks/RESULTS.md,
        "Serving: a queue that holds the clients".) 1 s before the first run has been timed."""
        return max(1, math.ceil(self.run_seconds or 1))

    def _timed(self, seconds: float) -> None:
        self.run_seconds = seconds if self.run_seconds is None else 0.8 * self.run_seconds + 0.2 * seconds

    def status(self) -> dict:
        return {"running": self.running is not None, "waiting": self.queue.qsize(), "queue_size": self.queue_size,
                "max_batch": self.max_batch, "jobs": dict(self.counts),
                "batches": {str(k): v for k, v in sorted(self.batches.items())}}

    def stop(self) -> None:
        """Cancel the running and waiting jobs and end the thread (server shutdown)."""
        for job in [self.running, *self.batch]:
            if job is not None:
                job.cancel()
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
            batch = [job] + self._companions(job)
            if len(batch) == 1:
                self._run(job)
            else:
                self._run_batch(batch)

    def _companions(self, first: Job) -> list[Job]:
        """Waiting jobs that can join `first`'s batch, taken out of the queue in arrival order
        while the batch has room (max_batch images)."""
        if self.max_batch <= first.request.n or not first.batchable:
            return []
        taken, room = [], self.max_batch - first.request.n
        with self.queue.mutex:  # queue.Queue's own lock: no put or get runs meanwhile
            waiting = self.queue.queue
            for job in list(waiting):
                if job is None or room <= 0:
                    break  # a stop request ends the search; it stays queued
                if job.request.n <= room and not job.cancelled.is_set() and job.joins(first):
                    waiting.remove(job)
                    taken.append(job)
                    room -= job.request.n
            if taken:
                self.queue.not_full.notify(len(taken))  # places freed, as get() would signal
        return taken

    def _run(self, job: Job) -> None:
        if job.cancelled.is_set() or not job.future.set_running_or_notify_cancel():
            self.counts["cancelled"] += 1
            return
        self._run_started(job)

    def _run_batch(self, batch: list[Job]) -> None:
        """Several jobs in one Pipeline.sample_batch; each job's step events carry its own rows."""
        jobs = []
        for job in batch:
            if job.cancelled.is_set() or not job.future.set_running_or_notify_cancel():
                self.counts["cancelled"] += 1
            else:
                jobs.append(job)
        if len(jobs) <= 1:
            for job in jobs:  # already running: generate it as any single job
                self._run_started(job)
            return
        rows, at = [], 0
        for job in jobs:
            rows.append((at, at + job.request.n))
            at += job.request.n
        live = set(range(len(jobs)))
        self.running, self.batch, start = jobs[0], jobs, time.perf_counter()

        def on_step(step: Step) -> None:
            for i in sorted(live):
                job, (a, b) = jobs[i], rows[i]
                if job.cancelled.is_set():  # answered now; its rows finish unseen
                    live.discard(i)
                    self.counts["cancelled"] += 1
                    job.future.set_exception(JobCancelled("the client went away"))
                elif job.on_step is not None:
                    job.on_step(Step(step.index, step.total, step.x[a:b], step.sigma, step.sigma_next,
                                     step.denoised[a:b]))
            if not live:
                raise JobCancelled("every client in the batch went away")

        try:
            x = jobs[0].pipe.sample_batch([j.request for j in jobs], callback=on_step)
        except JobCancelled:
            pass  # every job was answered as it was cancelled
        except Exception as e:  # every job still waiting hears of it
            for i in live:
                self.counts["failed"] += 1
                jobs[i].future.set_exception(e)
        else:
            for i in sorted(live):
                job, (a, b) = jobs[i], rows[i]
                self.counts["done"] += 1
                job.future.set_result(job.pipe.to_images(job.request, x[a:b]))
            self.batches[len(jobs)] += 1
            self._timed(time.perf_counter() - start)
        finally:
            self.running, self.batch = None, []

    def _run_started(self, job: Job) -> None:
        """_run() for a job whose future is already marked running."""
        self.running, start = job, time.perf_counter()
        try:
            images = job.pipe.generate(job.request, callback=lambda step: self._step(job, step))
        except JobCancelled as e:
            self.counts["cancelled"] += 1
            job.future.set_exception(e)
        except Exception as e:
            self.counts["failed"] += 1
            job.future.set_exception(e)
        else:
            self.counts["done"] += 1
            self.batches[1] += 1
            self._timed(time.perf_counter() - start)
            job.future.set_result(images)
        finally:
            self.running = None

    @staticmethod
    def _step(job: Job, step: Step) -> None:
        if job.cancelled.is_set():
            raise JobCancelled("the client went away")
        if job.on_step is not None:
            job.on_step(step)

