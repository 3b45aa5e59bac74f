"""The worker's batching (issue 21): waiting jobs with the same settings share network passes and
each still gets exactly its own images, its own step events, and its own cancellation."""

import time
from collections import Counter
from contextlib import contextmanager

import pytest
from conftest import HeldPipeline

from diffuse.errors import DiffuseError
from diffuse.pipeline import GenerateRequest, Pipeline
from diffuse.worker import Job, JobCancelled, Worker


@pytest.fixture
def held(tiny_model_dir):
    pipe = HeldPipeline(Pipeline.load(tiny_model_dir))
    pipe.gate.clear()  # the first job holds the worker until the test has queued the rest
    return pipe


def started(worker: Worker, job: Job) -> None:
    deadline = time.monotonic() + 30
    while worker.running is not job:
        assert time.monotonic() < deadline, "the first job did not start"
        time.sleep(0.01)


@contextmanager
def busy(held, max_batch: int = 8, queue_size: int = 8):
    """A Worker held at the first step of its first job (a red circle) until the test opens
    held.gate: the jobs the test queues meanwhile wait together. Stopped at the end."""
    worker = Worker(queue_size, max_batch=max_batch)
    try:
        started(worker, worker.submit(Job(GenerateRequest("a red circle", seed=1, steps=2), held)))
        yield worker
    finally:
        held.gate.set()
        worker.stop()


def pixels(images) -> list[bytes]:
    return [im.tobytes() for im in images]


def test_jobs_with_the_same_settings_share_a_batch_and_get_their_own_images(held, tiny_model_dir):
    with busy(held, max_batch=8) as worker:
        requests = [GenerateRequest("a blue square", n=2, seed=10, steps=3),
                    GenerateRequest("a green star", seed=20, steps=3, negative_prompt="red"),
                    GenerateRequest("a cross", seed=30, steps=5)]  # other steps: cannot join
        jobs = [worker.submit(Job(r, held)) for r in requests]
        held.gate.set()
        results = [j.future.result(timeout=60) for j in jobs]
        alone = Pipeline.load(tiny_model_dir)
        for request, images in zip(requests, results):
            assert pixels(images) == pixels(alone.generate(request))
            assert [im.info["diffuse"] for im in images] == [im.info["diffuse"] for im in alone.generate(request)]
        assert worker.batches == Counter({1: 2, 2: 1}) and worker.counts["done"] == 4


def test_each_job_of_a_batch_sees_its_own_rows_and_may_leave(held):
    with busy(held, max_batch=8) as worker:
        seen = {"a": [], "b": []}
        a = Job(GenerateRequest("a blue square", n=3, seed=5, steps=6), held,
                on_step=lambda step: seen["a"].append(tuple(step.x.shape)))
        b = Job(GenerateRequest("a pink star", seed=9, steps=6), held)

        def leave(step):
            seen["b"].append(step.index)
            if step.index == 1:
                b.cancel()
        b.on_step = leave
        worker.submit(a)
        worker.submit(b)
        held.gate.set()
        assert len(a.future.result(timeout=60)) == 3
        with pytest.raises(JobCancelled):
            b.future.result(timeout=60)
        assert seen["a"] == [(3, 3, 32, 32)] * 6 and seen["b"] == [0, 1]
        assert worker.batches[2] == 1 and worker.counts["cancelled"] == 1


def test_a_batch_stops_when_every_job_has_left(held):
    with busy(held, max_batch=8) as worker:
        jobs = [Job(GenerateRequest("a blue square", seed=s, steps=50), held) for s in (3, 4)]
        for j in jobs:
            j.on_step = lambda step, j=j: j.cancel()
            worker.submit(j)
        held.gate.set()
        for j in jobs:
            with pytest.raises(JobCancelled):
                j.future.result(timeout=60)
        assert worker.counts["cancelled"] == 2 and 2 not in worker.batches


def test_edits_and_big_jobs_run_alone(held, tiny_model_dir):
    from PIL import Image
    with busy(held, max_batch=4) as worker:
        init = Image.new("RGB", (32, 32), (200, 30, 30))
        jobs = [worker.submit(Job(GenerateRequest("a blue square", seed=2, steps=2, init_image=init), held)),
                worker.submit(Job(GenerateRequest("a blue square", seed=3, steps=2), held)),
                worker.submit(Job(GenerateRequest("a blue square", n=4, seed=4, steps=2), held))]  # no room
        held.gate.set()
        for j in jobs:
            j.future.result(timeout=60)
        assert worker.batches == Counter({1: 4})


def test_max_batch_must_be_positive():
    with pytest.raises(DiffuseError, match="max batch"):
        Worker(4, max_batch=0)


def test_retry_after_is_about_one_runs_time_whatever_the_queue_holds(held):
    """A place frees when the run going now ends (the worker then takes the next job or batch), so
    Retry-After is the moving average of a run's time, not that times the jobs waiting."""
    assert Worker(4).retry_after() == 1  # nothing timed yet
    with busy(held, max_batch=4, queue_size=4) as worker:
        worker._timed(2.2)
        assert worker.retry_after() == 3
        worker._timed(0.2)  # 0.8 * 2.2 + 0.2 * 0.2 = 1.8
        for k in range(4):
            worker.submit(Job(GenerateRequest("a blue square", seed=k, steps=2), held))
        with pytest.raises(Exception, match="retry after 2 s"):  # a full queue, yet about one run's time
            worker.submit(Job(GenerateRequest("a cross", seed=9, steps=2), held))
