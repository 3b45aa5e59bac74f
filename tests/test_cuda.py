"""The CUDA path, run where a GPU is (benchmarks/gpu_check.sh runs `pytest -m cuda`); skipped elsewhere.

A GPU picks other kernels than the CPU (TF32 matmuls, cuDNN convolutions chosen per shape), so
these tests compare with tolerances, not bit for bit."""

import pytest
import torch

from diffuse.checkpoint import load_checkpoint
from diffuse.pipeline import GenerateRequest, Pipeline
from diffuse.training import Trainer
from conftest import tiny_config

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_training_on_cuda_lowers_the_loss_and_loads_on_the_cpu(tmp_path, precision):
    trainer = Trainer(tiny_config(tmp_path / "run", steps=30, device="cuda", precision=precision, log_every=5))
    assert trainer.device.startswith("cuda") and next(trainer.model.parameters()).is_cuda
    trainer.run()
    import json
    rows = [json.loads(r) for r in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "loss" in r]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows) and rows[-1]["loss"] < rows[0]["loss"]
    model, _ = load_checkpoint(tmp_path / "run", "cpu")
    images = Pipeline(model).sample(GenerateRequest("a red circle", n=2, seed=1, steps=4))
    assert images.isfinite().all()


def test_resume_moves_between_cuda_and_cpu(tmp_path):
    Trainer(tiny_config(tmp_path / "run", steps=3, device="cuda")).run()
    Trainer(tiny_config(tmp_path / "run", steps=5, device="cpu", resume=True)).run()
    assert load_checkpoint(tmp_path / "run")[1]["training"]["steps"] == 5


def test_cuda_sampling_agrees_with_the_cpu_and_with_itself_at_any_batch_size(tiny_model_dir):
    req = GenerateRequest("a red circle", n=3, seed=7, steps=8)
    cpu = Pipeline.load(tiny_model_dir, "cpu").sample(req)
    gpu_pipe = Pipeline.load(tiny_model_dir, "cuda")
    gpu = gpu_pipe.sample(req).cpu()
    assert (gpu - cpu).abs().mean() < 0.02 and (gpu - cpu).abs().max() < 0.25  # TF32 on the GPU
    one_by_one = torch.cat([gpu_pipe.sample(GenerateRequest("a red circle", n=1, seed=s, steps=8)).cpu()
                            for s in req.seeds])
    assert (one_by_one - gpu).abs().max() < 1e-2


@pytest.mark.parametrize("method", ["progressive", "consistency"])
def test_distillation_on_cuda_trains_as_on_the_cpu(tiny_model_dir, tmp_path, method):
    """The batches, levels and noise come from the CPU's generator wherever the math runs, so a
    few iterations on the GPU end at the CPU's loss (TF32 apart), and the student loads on the CPU."""
    from diffuse.distill import DistillConfig, distill
    kw = dict(teacher=str(tiny_model_dir), steps=1, start_steps=2, iterations=4, batch_size=4, method=method, levels=6)
    loss = {}
    for device in ("cpu", "cuda:0"):
        out = distill(DistillConfig(out=str(tmp_path / device.replace(":", "")), device=device, **kw), progress=lambda m: None)
        loss[device] = load_checkpoint(out, "cpu")[1]["distilled"]["final_loss"]
    assert loss["cuda:0"] == pytest.approx(loss["cpu"], rel=0.05), loss
    images = Pipeline.load(out, "cpu")("a red circle", n=2, seed=1)  # the student's own steps, sampler, schedule
    assert len(images) == 2
