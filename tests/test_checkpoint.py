import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from diffuse.checkpoint import load_checkpoint, load_training_state
from diffuse.errors import CheckpointError


@pytest.fixture
def ckpt(tiny_model_dir, tmp_path):
    d = tmp_path / "ckpt"
    shutil.copytree(tiny_model_dir, d)
    return d


def test_loads(ckpt):
    model, cfg = load_checkpoint(ckpt)
    assert cfg["training"]["steps"] == 40 and cfg["data"]["kind"] == "shapes"
    assert not any(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("damage,message", [
    (lambda d: shutil.rmtree(d), "does not exist"),
    (lambda d: (d / "model.safetensors").unlink(), "has no model.safetensors"),
    (lambda d: (d / "config.json").unlink(), "has no config.json"),
    (lambda d: (d / "config.json").write_text("{oops"), "not valid JSON"),
    (lambda d: (d / "config.json").write_text('{"a": 1}'), "not a diffuse checkpoint"),
    (lambda d: _edit(d, version=99), "version 99"),
    (lambda d: _flip_byte(d / "model.safetensors"), "does not match the hash"),
    (lambda d: _edit(d, unet={**_cfg(d)["unet"], "channels": 24}), "does not fit its config"),
    (lambda d: _edit(d, unet={"nonsense": 1}), "describes no model"),
])
def test_damaged_checkpoints_are_clear_errors(ckpt, damage, message):
    damage(ckpt)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(ckpt)


def test_file_instead_of_directory(tmp_path):
    (tmp_path / "model.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(CheckpointError, match="not a directory"):
        load_checkpoint(tmp_path / "model.bin")


def test_training_state_is_checked(ckpt):
    _flip_byte(ckpt / "training_state.safetensors")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_training_state(ckpt)
    (ckpt / "training_state.json").unlink()
    with pytest.raises(CheckpointError, match="no training state"):
        load_training_state(ckpt)


def test_no_temporary_files_left(ckpt):
    assert not [p for p in ckpt.iterdir() if p.name.endswith(".tmp")]


def _cfg(d):
    return json.loads((d / "config.json").read_text())


def _edit(d, **changes):
    (d / "config.json").write_text(json.dumps({**_cfg(d), **changes}))


def _flip_byte(path):
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_save_that_fails_half_way_leaves_the_previous_checkpoint_whole(ckpt, monkeypatch):
    import diffuse.checkpoint as cp
    model, cfg = load_checkpoint(ckpt)
    before = {p.name: p.read_bytes() for p in ckpt.iterdir() if p.is_file()}  # not best/
    calls = []

    def failing_stage_json(path, data):
        calls.append(path.name)
        if path.name == "config.json":
            raise OSError("disk full")
        return original(path, data)

    original = cp._stage_json
    monkeypatch.setattr(cp, "_stage_json", failing_stage_json)
    with pytest.raises(OSError, match="disk full"):
        cp.save_checkpoint(ckpt, model, {"training": {"steps": 99}}, {"x": model.state_dict()["text_encoder.pos"]}, {})
    assert {p.name: p.read_bytes() for p in ckpt.iterdir() if p.is_file()} == before  # nothing replaced, no temp files
    load_checkpoint(ckpt)


def test_raw_weights_benchmark_writes_the_optimizer_weights_as_a_model(tiny_model_dir, tmp_path):
    """benchmarks/raw_weights.py: the EMA's run, rewritten with the weights the optimizer stepped,
    loads as a model whose tensors are the training state's, not the EMA's (RESULTS compares them)."""
    script = Path(__file__).parent.parent / "benchmarks" / "raw_weights.py"
    out = tmp_path / "raw"
    subprocess.run([sys.executable, str(script), str(tiny_model_dir), str(out)], check=True, capture_output=True)
    raw, cfg = load_checkpoint(out)
    ema, ema_cfg = load_checkpoint(tiny_model_dir)
    state, _ = load_training_state(tiny_model_dir)
    for k, v in raw.state_dict().items():
        assert torch.equal(v, state["model." + k])  # the layout the trainer writes, spelled out
    assert any(not torch.equal(v, ema.state_dict()[k]) for k, v in raw.state_dict().items())
    assert cfg["training"] == ema_cfg["training"]


def _killed_save(ckpt, model, kill_at: int) -> None:
    """Save in a forked child that dies (os._exit, no clean-up) at its `kill_at`-th rename,
    as a SIGKILL would leave the directory."""
    import os
    import diffuse.checkpoint as cp
    pid = os.fork()
    if pid == 0:
        calls = [0]
        real = os.replace

        def dying_replace(a, b):
            if calls[0] == kill_at:
                os._exit(0)
            calls[0] += 1
            real(a, b)

        cp.os.replace = dying_replace
        try:
            cp.save_checkpoint(ckpt, model, {"training": {"steps": 99}}, {"x": torch.ones(3)}, {"step": 99})
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


@pytest.mark.parametrize("kill_at", range(6))  # before and after the journal, and at each file's rename
def test_a_save_killed_at_any_rename_leaves_one_whole_checkpoint(ckpt, kill_at):
    from diffuse.checkpoint import remove_stale_temporaries
    model, old_cfg = load_checkpoint(ckpt)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    _killed_save(ckpt, model, kill_at)
    loaded, cfg = load_checkpoint(ckpt)  # rolls a committed save forward
    state, info = load_training_state(ckpt)
    new = kill_at >= 1  # the first rename is the journal's: the commit point
    assert cfg["training"]["steps"] == (99 if new else old_cfg["training"]["steps"])
    assert (info.get("step") == 99) == new and ("x" in state) == new
    expect = model.state_dict() if new else load_checkpoint(ckpt)[0].state_dict()
    assert all(torch.equal(v, expect[k]) for k, v in loaded.state_dict().items())
    remove_stale_temporaries(ckpt)
    assert not [p.name for p in ckpt.iterdir() if p.name.startswith(".")]
