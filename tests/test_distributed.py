"""Scale: torchrun with two CPU processes (gloo) against one process, device choice, prompt files.

The torchrun tests start real processes (`python -m torch.distributed.run --standalone`), one
thread each, on the tiny preset: about 10-20 s each on two shared cores.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from diffuse.cli import main
from diffuse.devices import resolve_device
from diffuse.distributed import World, backend_for, shard
from diffuse.errors import DiffuseError
from diffuse.prompts import SEED_STRIDE, read_prompt_file, requests_from_entries
from diffuse.training import TrainConfig, Trainer, autocast_dtype, micro_batches
from conftest import tiny_config

ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}


def diffuse_command(args, processes: int | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    """`diffuse ARGS` in a fresh process, or under torchrun with `processes` processes."""
    launcher = [sys.executable]
    if processes:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    p = subprocess.run(launcher + ["-m", "diffuse", *map(str, args)], capture_output=True, text=True,
                       env=ONE_THREAD, timeout=timeout)
    assert p.returncode == 0, p.stderr[-4000:]
    return p


def assert_same_tensors(dir_a, dir_b, atol=1e-6):
    for name in ("model.safetensors", "training_state.safetensors"):
        a, b = load_file(dir_a / name), load_file(dir_b / name)
        assert a.keys() == b.keys()
        for k in a:
            if k.startswith("rng."):
                assert torch.equal(a[k], b[k]), (name, k)
            else:
                torch.testing.assert_close(a[k], b[k], atol=atol, rtol=1e-5, msg=lambda m: f"{name} {k}: {m}")


# Per process: micro-batches of 2, one per step; two processes make a global batch of 4. The
# warm-up is the command's default, which tiny_config shortens.
TRAIN = dict(preset="tiny", data_size=64, batch_size=2, steps=10, warmup_steps=TrainConfig.warmup_steps)


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("torchrun") / "run"
    diffuse_command(["train", "--data", "shapes", "--out", out, "--preset", "tiny", "--data-size", 64,
                     "--batch-size", 2, "--steps", 10, "--checkpoint-every", 5, "--preview-every", 0, "--quiet",
                     "--precision", "fp32"],
                    processes=2)
    return out


def test_two_processes_train_as_one_accumulating_two(two_process_run, tmp_path):
    one = tmp_path / "one"
    Trainer(tiny_config(one, grad_accum=2, **TRAIN)).run()
    assert_same_tensors(two_process_run, one)
    training = json.loads((two_process_run / "config.json").read_text())["training"]
    assert (training["global_batch"], training["world_size"], training["images_seen"]) == (4, 2, 40)
    rows = [json.loads(r) for r in (two_process_run / "log.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]  # the rest are events (checkpoints' probe losses)
    assert [(r["step"], r["global_batch"], r["processes"]) for r in steps] == [(10, 4, 2)]  # rank 0 alone writes
    checkpoints = [r["step"] for r in rows if r.get("event") == "checkpoint"]
    assert checkpoints == sorted(set(checkpoints)) and checkpoints[-1] == 10  # once each, by rank 0


def test_two_process_checkpoint_resumes_in_one_process(two_process_run, tmp_path):
    resumed, straight = tmp_path / "resumed", tmp_path / "straight"
    shutil.copytree(two_process_run, resumed)
    Trainer(tiny_config(resumed, grad_accum=2, resume=True, **{**TRAIN, "steps": 14})).run()
    Trainer(tiny_config(straight, grad_accum=2, **{**TRAIN, "steps": 14})).run()
    # The two processes' gradients are summed in another order than one process accumulates them:
    # within 1e-6 at step 10 (the test above), that rounding grew to 2.2e-6 after 4 more AdamW
    # steps on a CPU without AVX-512. A resume that lost any state would differ by a whole step.
    assert_same_tensors(resumed, straight, atol=1e-5)


def test_resume_with_another_global_batch_warns(two_process_run, tmp_path):
    shutil.copytree(two_process_run, tmp_path / "run")
    with pytest.warns(UserWarning, match="global batch of 4 .* continues with 2.*--grad-accum 2 keeps it"):
        Trainer(tiny_config(tmp_path / "run", resume=True, **{**TRAIN, "steps": 11}))


def test_micro_batches_of_all_processes_tile_the_global_batch():
    for world, accum in [(1, 1), (2, 1), (2, 3), (4, 2)]:
        parts = [s for rank in range(world) for s in micro_batches(5, accum, rank)]
        assert parts == micro_batches(5, world * accum, 0)  # W processes = one accumulating W x A
        covered = [i for s in parts for i in range(s.start, s.stop)]
        assert covered == list(range(5 * world * accum))


def test_world_from_torchrun_environment():
    assert World.from_env({}) == World(0, 1, 0)
    assert World.from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == World(3, 4, 1)
    with pytest.raises(DiffuseError, match="RANK 4 is not below WORLD_SIZE 4"):
        World.from_env({"RANK": "4", "WORLD_SIZE": "4"})
    assert sorted(i for r in range(3) for i in shard(8, World(r, 3))) == list(range(8))


def test_device_selection():
    assert resolve_device("auto", gpus=0) == "cpu"
    assert resolve_device("cpu", local_rank=1, gpus=2) == "cpu"
    assert resolve_device("auto", local_rank=1, gpus=2) == "cuda:1"
    assert resolve_device("cuda", gpus=1) == "cuda:0"
    with pytest.raises(DiffuseError, match="--device cuda: .*use --device cpu or auto"):
        resolve_device("cuda", gpus=0)
    with pytest.raises(DiffuseError, match="at most 2 processes per node"):
        resolve_device("cuda", local_rank=2, gpus=2)
    with pytest.raises(DiffuseError, match="unknown device"):
        resolve_device("tpu")
    assert backend_for("cuda:1") == "nccl" and backend_for("cpu") == "gloo"
    from diffuse.devices import cpu_has_fast_bf16
    assert autocast_dtype("auto", "cuda:1") is None and autocast_dtype("fp32", "cpu") is None
    assert autocast_dtype("auto", "cpu") == (torch.bfloat16 if cpu_has_fast_bf16() else None)
    assert autocast_dtype("bf16", "cuda:1") == torch.bfloat16
    assert cpu_has_fast_bf16("flags\t\t: fpu avx512f avx512_bf16 avx512_vnni")
    assert cpu_has_fast_bf16("flags\t\t: fpu amx_bf16 amx_tile") and not cpu_has_fast_bf16("flags: fpu avx512f avx512bw")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
@pytest.mark.parametrize("command", [["train", "--data", "shapes", "--out", "{d}/o", "--steps", "1"],
                                     ["generate", "x", "--model", "{d}/m", "--out", "{d}/o"]])
def test_cuda_without_a_gpu_is_one_line_exit_2(tmp_path, capsys, command):
    code = main([a.format(d=tmp_path) for a in command] + ["--device", "cuda"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--device cuda" in err
    assert not (tmp_path / "o").exists()


def test_compiled_training_matches_eager(tmp_path):
    """--compile changes how the UNet runs, not what it computes or how checkpoints are named.
    The first run on a machine compiles for minutes (inductor caches the result)."""
    Trainer(tiny_config(tmp_path / "eager", steps=2, batch_size=4, data_size=32)).run()
    Trainer(tiny_config(tmp_path / "compiled", steps=2, batch_size=4, data_size=32, compile=True)).run()
    assert_same_tensors(tmp_path / "eager", tmp_path / "compiled", atol=1e-4)


PROMPTS = ('a red circle\n'
           '\n'
           '{"prompt": "a blue star", "n": 1, "seed": 42, "steps": 4}\n'
           'a green square\n'
           '{"prompt": "a yellow cross", "guidance": 1.5, "sampler": "euler_ancestral", "negative_prompt": "red"}\n')


def test_prompt_file_seeds_and_settings(tmp_path):
    (tmp_path / "p.txt").write_text(PROMPTS)
    entries = read_prompt_file(tmp_path / "p.txt")
    reqs = requests_from_entries(entries, {"n": 2, "steps": 3}, seed=7)
    assert [r.prompt for r in reqs] == ["a red circle", "a blue star", "a green square", "a yellow cross"]
    assert [r.seed for r in reqs] == [7, 42, 7 + 2 * SEED_STRIDE, 7 + 3 * SEED_STRIDE]  # blank lines do not count
    assert (reqs[1].n, reqs[1].steps, reqs[0].steps) == (1, 4, 3)
    assert (reqs[3].sampler, reqs[3].guidance, reqs[3].negative_prompt) == ("euler_ancestral", 1.5, "red")
    assert entries[1].where.endswith("p.txt:3")


def test_sharded_generation_writes_the_images_one_process_writes(tiny_model_dir, tmp_path):
    (tmp_path / "p.txt").write_text(PROMPTS)
    args = ["generate", "--prompts", tmp_path / "p.txt", "--model", tiny_model_dir, "--steps", 3, "-n", 2,
            "--seed", 7, "--grid"]
    one = diffuse_command(args + ["--out", tmp_path / "one"])
    two = diffuse_command(args + ["--out", tmp_path / "two"], processes=2)
    files = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert len(files) == 11 and files == sorted(p.name for p in (tmp_path / "two").iterdir())  # 7 images, 4 grids
    printed = sorted(line.split("/")[-1] for line in two.stdout.split())
    assert printed == files  # each image drawn by exactly one of the two processes
    for name in files:
        a, b = Image.open(tmp_path / "one" / name), Image.open(tmp_path / "two" / name)
        assert np.array_equal(np.asarray(a), np.asarray(b)), name
        assert a.text == b.text, name
    assert json.loads(Image.open(tmp_path / "one" / "2008-a-green-square.png").text["diffuse"])["seed"] == 2008
    assert len(one.stdout.split()) == 11


@pytest.mark.parametrize("content,extra,message", [
    ("", [], "holds no prompts"),
    ('{"prompt": "x", "n": 0}\n', [], "p.txt:1: n must be"),
    ('a\n{"prompt": "x", "colour": "red"}\n', [], "p.txt:2: unknown field 'colour'"),
    ('{"prompt": "x"\n', [], "p.txt:1: a line starting with '{' must be a JSON object"),
    ('{"n": 2}\n', [], "no \"prompt\""),
    ('{"prompt": "x", "seed": null}\n', [], "seed must be an integer"),
    ('{"prompt": "x", "width": 33}\n', [], "p.txt:1: width 33"),
    ('{"prompt": "x", "seed": 5}\n{"prompt": "x", "seed": 5}\n', [], "would both write"),
    ("a\n", ["--out", "{d}/o.png"], "--out must be a folder"),
    ("a\n", ["x"], "not both"),
])
def test_bad_prompt_files(tiny_model_dir, tmp_path, capsys, content, extra, message):
    (tmp_path / "p.txt").write_text(content)
    args = ["generate", "--prompts", tmp_path / "p.txt", "--model", tiny_model_dir, "--steps", 2, "--out", tmp_path / "o"]
    code = main([str(a).format(d=tmp_path) for a in args + extra])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.png").exists()


def test_generate_needs_a_prompt(tiny_model_dir, capsys):
    assert main(["generate", "--model", str(tiny_model_dir)]) == 2
    assert "give a prompt, or --prompts FILE" in capsys.readouterr().err
