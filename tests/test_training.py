import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from diffuse.denoiser import EDMLoss
from diffuse.errors import DiffuseError
from diffuse.pipeline import GenerateRequest, Pipeline
from diffuse.training import TrainConfig, Trainer, batch_indices, ema_beta, learning_rate, resume_config
from conftest import tiny_config


def _fixed_loss(model, data):
    g = torch.Generator().manual_seed(123)
    y = data.images[:64]
    sigma, noise = EDMLoss().sample_sigma(64, g), torch.randn(y.shape, generator=g)
    with torch.no_grad():
        return EDMLoss()(model, y, model.encode(data.captions[:64]), sigma, noise).mean().item()


def _step_rows(run: Path) -> list[dict]:
    """The log's training rows, without its event rows (checkpoint probes, gradient spikes)."""
    rows = [json.loads(r) for r in (run / "log.jsonl").read_text().splitlines()]
    return [r for r in rows if "event" not in r]


def test_training_lowers_the_loss(tmp_path):
    trainer = Trainer(tiny_config(tmp_path / "run", steps=60))
    before = _fixed_loss(trainer.model, trainer.data)
    trainer.run()
    after = _fixed_loss(trainer.model, trainer.data)
    assert after < 0.8 * before, (before, after)
    rows = _step_rows(tmp_path / "run")
    assert rows[-1]["step"] == 60 and all(r["images_per_s"] > 0 for r in rows)


def test_resume_equals_uninterrupted_training(tmp_path):
    Trainer(tiny_config(tmp_path / "straight", steps=6)).run()
    Trainer(tiny_config(tmp_path / "split", steps=3, log_every=1)).run()
    Trainer(tiny_config(tmp_path / "split", steps=6, resume=True, log_every=1)).run()
    for name in ("model.safetensors", "training_state.safetensors"):
        a, b = load_file(tmp_path / "straight" / name), load_file(tmp_path / "split" / name)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (name, k)
    steps = [r["step"] for r in _step_rows(tmp_path / "split")]
    assert steps == sorted(set(steps))


def test_checkpoint_round_trip_gives_identical_images(tmp_path):
    trainer = Trainer(tiny_config(tmp_path / "run", steps=5))
    trainer.run()
    req = GenerateRequest("a red circle", n=2, seed=5, steps=6)
    pipe = Pipeline.load(tmp_path / "run")
    direct = Pipeline(trainer.ema, pipe.model_hash).sample(req)  # the hash picks the watermark's codewords
    assert torch.equal(direct, pipe.sample(req))


def test_existing_run_is_not_overwritten_and_resume_needs_a_checkpoint(tmp_path):
    Trainer(tiny_config(tmp_path / "run", steps=2)).run()
    with pytest.raises(DiffuseError, match="--resume"):
        Trainer(tiny_config(tmp_path / "run", steps=2))
    with pytest.raises(DiffuseError, match="does not exist"):
        Trainer(tiny_config(tmp_path / "other", steps=2, resume=True))
    with pytest.raises(DiffuseError, match="cannot resume: the run used seed"):
        Trainer(tiny_config(tmp_path / "run", steps=4, resume=True, seed=9))


def test_preview_grid_is_written_with_its_parameters_and_signed(tmp_path):
    from PIL import Image
    from diffuse.credentials import load_credentials, read_claim
    Trainer(tiny_config(tmp_path / "run", steps=2, preview_every=2), credentials=load_credentials()).run()
    path = tmp_path / "run" / "previews" / "step_0000002.png"
    img = Image.open(path)
    assert img.size == (4 * 32, 4 * 32)
    params = json.loads(img.text["diffuse"])
    assert params["picture"] == "training preview" and params["step"] == 2 and len(params["images"]) == 16
    assert read_claim(path.read_bytes()).valid


def test_data_order_depends_only_on_position():
    whole = batch_indices(10, 0, 25, seed=1)
    parts = torch.cat([batch_indices(10, 0, 7, 1), batch_indices(10, 7, 18, 1)])
    assert torch.equal(whole, parts)
    assert sorted(whole[:10].tolist()) == list(range(10))  # each epoch is a permutation


def test_ema_beta_follows_the_half_life():
    assert ema_beta(32, 10 ** 9, 2.0, 0.1) ** (2000 / 32) == pytest.approx(0.5)
    assert ema_beta(32, 320, 2.0, 0.1) < ema_beta(32, 10 ** 6, 2.0, 0.1)  # ramp-up early


def test_learning_rate_warms_up_then_follows_the_schedule():
    rates = [learning_rate(s, 1.0, 10, "cosine", 111) for s in range(111)]
    assert rates[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert rates[10] == pytest.approx(1.0) and rates[-1] == pytest.approx(0.1)
    assert rates[60] == pytest.approx(0.55)  # half way down the cosine: 0.1 + 0.9 / 2
    assert all(a >= b for a, b in zip(rates[10:], rates[11:]))
    assert [learning_rate(s, 1.0, 10, "constant", 110) for s in (10, 109)] == [1.0, 1.0]
    rsqrt = [learning_rate(s, 1.0, 10, "rsqrt", None, ref=100) for s in (10, 100, 400, 10_000)]
    assert rsqrt == pytest.approx([1.0, 1.0, 0.5, 0.1])  # EDM2 eq. 17: peak / sqrt(step / ref)


@pytest.mark.parametrize("kw,message", [({"steps": None}, "budget"), ({"steps": 0}, "steps"),
                                        ({"batch_size": 0}, "batch_size"), ({"lr": -1.0}, "learning rate"),
                                        ({"image_size": 48}, "image size"), ({"lr_schedule": "step"}, "lr schedule"),
                                        ({"lr_schedule": "cosine", "steps": None, "minutes": 1.0}, "needs --steps"),
                                        ({"p_std": 0.0}, "p_std"), ({"high_sigma_share": 1.5}, "high sigma share")])
def test_bad_training_config(tmp_path, kw, message):
    with pytest.raises(DiffuseError, match=message):
        tiny_config(tmp_path, **kw)


def _same_files(a, b):
    for name in ("model.safetensors", "training_state.safetensors"):
        x, y = load_file(a / name), load_file(b / name)
        assert x.keys() == y.keys()
        for k in x:
            assert torch.equal(x[k], y[k]), (name, k)


@pytest.mark.parametrize("where", ["backward", "opt.step"])
def test_ctrl_c_mid_step_stops_at_the_step_boundary_and_resumes_exactly(tmp_path, where):
    """A SIGINT that lands inside a step (after its randomness is drawn, inside the optimizer's
    update) must not save a half-made step: the stopped-and-resumed run equals an unbroken one."""
    import os
    import signal
    Trainer(tiny_config(tmp_path / "straight", steps=6)).run()
    trainer = Trainer(tiny_config(tmp_path / "split", steps=6))
    calls = [0]
    if where == "opt.step":
        real = trainer.opt.step

        def interrupted_step(*args, **kw):
            calls[0] += 1
            if calls[0] == 3:
                os.kill(os.getpid(), signal.SIGINT)
            return real(*args, **kw)
        trainer.opt.step = interrupted_step
    else:
        real = trainer.micro_step

        def interrupted_micro(*args):
            calls[0] += 1
            out = real(*args)
            if calls[0] == 3:
                os.kill(os.getpid(), signal.SIGINT)
            return out
        trainer.micro_step = interrupted_micro
    with pytest.raises(KeyboardInterrupt):
        trainer.run()
    assert json.loads((tmp_path / "split" / "training_state.json").read_text())["step"] == 3
    Trainer(tiny_config(tmp_path / "split", steps=6, resume=True)).run()
    _same_files(tmp_path / "straight", tmp_path / "split")


def test_resume_keeps_the_runs_own_settings_unless_given(tmp_path, recwarn):
    from diffuse.training import resume_config
    recipe = dict(lr=1e-3, weight_decay=0.01, ema_halflife_kimg=5.0, p_mean=-1.0, high_sigma_share=0.2,
                  caption_dropout=0.2, clip_grad=1.0, lr_schedule="cosine", batch_size=4)
    Trainer(tiny_config(tmp_path / "run", steps=3, **recipe)).run()
    cfg = resume_config(tmp_path / "run", "shapes", minutes=1.0, progress=False)
    assert {k: getattr(cfg, k) for k in recipe} == recipe and cfg.steps == 3 and cfg.preset == "tiny"
    cfg = resume_config(tmp_path / "run", "shapes", steps=5, lr=5e-4, weight_decay=0.0, lr_schedule=None)
    assert (cfg.lr, cfg.weight_decay, cfg.lr_schedule, cfg.steps) == (5e-4, 0.0, "cosine", 5)
    trainer = Trainer(cfg)
    assert [g["weight_decay"] for g in trainer.opt.param_groups] == [0.0]  # not the saved optimizer's 0.01
    said = {str(w.message) for w in recwarn}
    assert "the resumed run changes lr from 0.001 to 0.0005" in said
    assert "the resumed run changes weight_decay from 0.01 to 0.0" in said
    assert not any("ema" in m or "p_mean" in m for m in said)
    with pytest.raises(DiffuseError, match=r"cannot resume: the run used data='shapes', not 'digits'"):
        Trainer(resume_config(tmp_path / "run", "digits"))  # another data is refused, not silently dropped


def test_cli_resume_takes_the_runs_settings(tmp_path):
    from diffuse.cli import main
    out = str(tmp_path / "run")
    base = ["train", "--data", "shapes", "--out", out, "--preset", "tiny", "--data-size", "64", "--batch-size", "4",
            "--preview-every", "0", "--quiet"]
    assert main(base + ["--steps", "2", "--lr", "1e-3", "--p-mean", "-1.0"]) == 0
    with pytest.warns(UserWarning, match="changes caption_dropout from 0.1 to 0.3"):
        assert main(["train", "--data", "shapes", "--out", out, "--resume", "--steps", "3", "--preview-every", "0",
                     "--quiet", "--caption-dropout", "0.3"]) == 0
    state = json.loads((tmp_path / "run" / "training_state.json").read_text())
    assert state["step"] == 3 and state["global_batch"] == 4
    assert (state["train"]["lr"], state["train"]["p_mean"], state["train"]["caption_dropout"]) == (1e-3, -1.0, 0.3)


def test_a_run_extended_with_more_steps_continues_the_same_rsqrt_schedule(tmp_path):
    """The rsqrt schedule does not depend on --steps, so a run of 6 steps extended to 8 equals a
    run asked for 8 from the start (a cosine would have decayed to its end at step 6)."""
    kw = dict(lr_schedule="rsqrt", lr_ref_steps=2, warmup_steps=1, log_every=1)
    Trainer(tiny_config(tmp_path / "straight", steps=8, **kw)).run()
    Trainer(tiny_config(tmp_path / "extended", steps=6, **kw)).run()
    Trainer(tiny_config(tmp_path / "extended", steps=8, resume=True, **kw)).run()
    _same_files(tmp_path / "straight", tmp_path / "extended")
    rates = [r["lr"] for r in _step_rows(tmp_path / "extended")]
    assert rates == pytest.approx([2e-3 / max(s / 2, 1) ** 0.5 for s in range(8)])


def test_a_nan_loss_stops_the_run_before_it_poisons_the_weights(tmp_path):
    Trainer(tiny_config(tmp_path / "run", steps=2)).run()
    before = load_file(tmp_path / "run" / "model.safetensors")
    trainer = Trainer(tiny_config(tmp_path / "run", steps=4, resume=True))
    trainer.data.images[:] = float("nan")
    with pytest.raises(DiffuseError, match=r"loss became nan or inf at step 3; .*checkpoint of step 2 .* is intact"):
        trainer.run()
    assert all(p.isfinite().all() for p in trainer.model.parameters())  # the optimizer never stepped on it
    after = load_file(tmp_path / "run" / "model.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_a_checkpoint_that_cannot_be_written_stops_with_one_line_and_keeps_the_last(tmp_path):
    """A file-size limit (RLIMIT_FSIZE) stands in for a full disk: the write fails with EFBIG.
    The resumed run goes in a fresh interpreter (a forked one can hang in OpenMP)."""
    import subprocess
    import sys
    Trainer(tiny_config(tmp_path / "run", steps=2)).run()
    before = load_file(tmp_path / "run" / "model.safetensors")
    script = (
        "import resource, signal\n"
        "from conftest import tiny_config\n"
        "from diffuse.training import Trainer\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails instead of killing us\n"
        f"trainer = Trainer(tiny_config({str(tmp_path / 'run')!r}, steps=3, resume=True))\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))\n"
        "trainer.run()\n")
    tests = str(Path(__file__).parent)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join([tests, str(Path(tests).parent)])})
    said = done.stderr.strip().splitlines()[-1]
    assert done.returncode != 0 and said.startswith("diffuse.errors.DiffuseError: could not write the checkpoint "
                                                    "of step 3"), done.stderr
    assert "the checkpoint of step 2 is intact" in said
    after = load_file(tmp_path / "run" / "model.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")]


def test_the_best_checkpoint_is_kept_apart_and_divergence_warns(tmp_path):
    trainer = Trainer(tiny_config(tmp_path / "run", steps=4, checkpoint_every=1))
    probes = iter([1.0, 0.5, 0.8, 1.2, 1.2])  # the last step is saved (and scored) again as the run ends
    trainer.best.probe_loss = lambda ema: next(probes)
    with pytest.warns(UserWarning, match=r"may have diverged: probe loss 1.2000 at step 4 against 0.5000 at step 2"):
        trainer.run()
    from diffuse.checkpoint import load_checkpoint
    _, best = load_checkpoint(tmp_path / "run" / "best")
    assert best["training"]["steps"] == 2 and best["probe_loss"] == 0.5
    Trainer(tiny_config(tmp_path / "run" / "best", steps=3, resume=True)).run()  # resumable, as the warning says


def test_the_probe_loss_is_exact_and_leaves_the_run_untouched(tmp_path):
    trainer = Trainer(tiny_config(tmp_path / "run", steps=2))
    state = torch.get_rng_state(), trainer.gen.get_state()
    assert trainer.best.probe_loss(trainer.ema) == trainer.best.probe_loss(trainer.ema)
    assert torch.equal(state[0], torch.get_rng_state()) and torch.equal(state[1], trainer.gen.get_state())


# What a SIGKILL inside a save leaves behind (benchmarks/chaos_train.py lands kills there).
KILLED = ".k1ll3d.tmp"  # the suffix of a temporary file named as checkpoint._temp_path names them


def _as_if_killed_after_the_commit_point(d: Path) -> None:
    """Put a checkpoint back as a save killed just after its journal's rename leaves it: the
    journal in place, every file still under its temporary name."""
    renames = []
    for name in ("model.safetensors", "training_state.safetensors", "training_state.json", "config.json"):
        (d / name).rename(d / f".{name}{KILLED}")
        renames.append([f".{name}{KILLED}", name])
    (d / ".commit.json").write_text(json.dumps({"renames": renames}))


def _temporaries(d: Path) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.name.endswith(".tmp") or p.name == ".commit.json")


def test_a_resume_removes_what_killed_saves_left_in_best_too(tmp_path):
    """best/ is saved into as often as the run directory, so a kill lands in its saves as often."""
    run = tmp_path / "run"
    Trainer(tiny_config(run, steps=2, checkpoint_every=1)).run()
    for p in (run / f".model.safetensors{KILLED}", run / "best" / f".training_state.safetensors{KILLED}"):
        p.write_bytes(b"half a file")
    Trainer(tiny_config(run, steps=3, resume=True)).run()
    assert _temporaries(run) == []


def test_a_fresh_start_removes_what_a_killed_first_save_left(tmp_path):
    """Killed before its first checkpoint committed, a run has nothing to resume and starts again."""
    run = tmp_path / "run"
    run.mkdir()
    (run / f".model.safetensors{KILLED}").write_bytes(b"half a file")
    Trainer(tiny_config(run, steps=1)).run()
    assert _temporaries(run) == []


def test_a_first_save_killed_after_its_commit_point_resumes(tmp_path):
    """Past the commit point the save counts (the next reader rolls it forward), even before
    config.json and training_state.json are in place: --resume continues it exactly."""
    from diffuse.training import resume_config
    Trainer(tiny_config(tmp_path / "straight", steps=3)).run()
    run = tmp_path / "run"
    Trainer(tiny_config(run, steps=2)).run()
    _as_if_killed_after_the_commit_point(run)
    cfg = resume_config(run, "shapes", progress=False, preview_every=0, checkpoint_every=0, steps=3)
    Trainer(cfg).run()
    _same_files(tmp_path / "straight", run)


def test_a_first_save_killed_after_its_commit_point_is_not_overwritten_by_a_fresh_start(tmp_path):
    run = tmp_path / "run"
    Trainer(tiny_config(run, steps=2)).run()
    _as_if_killed_after_the_commit_point(run)
    with pytest.raises(DiffuseError, match="already holds a checkpoint"):
        Trainer(tiny_config(run, steps=2))


@pytest.mark.parametrize("killed_in", ["probe", "best save"])
def test_a_kill_between_a_checkpoint_and_its_best_copy_leaves_best_as_an_unbroken_run(tmp_path, monkeypatch, killed_in):
    """Killed after the checkpoint of step 2 was saved but before best/ took it (while scoring
    its probe loss, or inside best/'s save), the resumed run scores it first, so best/ holds step
    2 as in a run never stopped, not the step 1 a later checkpoint would keep."""
    import diffuse.training as training
    from diffuse.checkpoint import read_config
    probes = {1: 1.0, 2: 0.5, 3: 0.8}

    def trainer(out, **kw):
        t = Trainer(tiny_config(out, steps=3, checkpoint_every=1, **kw))
        t.best.probe_loss = lambda ema: probes[t.step]
        return t

    trainer(tmp_path / "straight").run()
    split, real_save = trainer(tmp_path / "split"), training.save_checkpoint

    def dying_probe(ema):  # SystemExit stands for the SIGKILL: nothing after it runs
        if split.step == 2:
            raise SystemExit
        return probes[split.step]

    def dying_save(directory, *args, **kw):
        if split.step == 2 and Path(directory).name == "best":
            raise SystemExit
        return real_save(directory, *args, **kw)
    if killed_in == "probe":
        split.best.probe_loss = dying_probe
    else:
        monkeypatch.setattr(training, "save_checkpoint", dying_save)
    with pytest.raises(SystemExit):
        split.run()
    monkeypatch.setattr(training, "save_checkpoint", real_save)
    trainer(tmp_path / "split", resume=True).run()
    for run in ("straight", "split"):
        assert read_config(tmp_path / run / "best")["training"]["steps"] == 2, run
    _same_files(tmp_path / "straight" / "best", tmp_path / "split" / "best")
    events = [json.loads(r) for r in (tmp_path / "split" / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e.get("event") == "checkpoint"] == [1, 2, 3]  # each scored once


def test_a_run_saved_before_a_setting_existed_resumes_with_what_it_did_then(tmp_path):
    """The default schedule is rsqrt now; a run whose state predates the option had a constant rate."""
    Trainer(tiny_config(tmp_path / "run", steps=2)).run()
    state = tmp_path / "run" / "training_state.json"
    info = json.loads(state.read_text())
    for key in ("lr_schedule", "clip_grad", "high_sigma_share"):
        info["train"].pop(key)
    state.write_text(json.dumps(info))
    cfg = resume_config(tmp_path / "run", "shapes", steps=3)
    assert (cfg.lr_schedule, cfg.clip_grad, cfg.high_sigma_share) == ("constant", 0.0, 0.0)
    assert TrainConfig(data="shapes", out="x", steps=1).lr_schedule == "rsqrt"


@pytest.mark.parametrize("ran_in", ["fp32", "bf16"])
def test_a_resumed_run_keeps_the_precision_it_ran_in(tmp_path, ran_in):
    run = tmp_path / "run"
    Trainer(tiny_config(run, steps=1, precision=ran_in)).run()
    cfg = resume_config(run, "shapes", progress=False, preview_every=0, checkpoint_every=0, steps=2)
    assert cfg.precision == "auto"  # not given again: whatever this CPU would choose for a new run
    assert Trainer(cfg).amp == (torch.bfloat16 if ran_in == "bf16" else None)
    forced = resume_config(run, "shapes", progress=False, preview_every=0, checkpoint_every=0, steps=2,
                           precision="fp32")
    assert Trainer(forced).amp is None  # given on purpose: changed


def test_init_starts_a_new_run_from_a_models_weights_with_fresh_state(tmp_path, tiny_model_dir):
    """--init: the network, vocabulary and weights of a trained model (model and EMA alike); the
    step count, optimizer and schedule start afresh; config.json names where it started, and a
    resume keeps it while another --init is refused."""
    from diffuse.checkpoint import load_checkpoint, read_config
    start, _ = load_checkpoint(tiny_model_dir)
    trainer = Trainer(tiny_config(tmp_path / "ft", steps=3, init=str(tiny_model_dir)))
    for net in (trainer.model, trainer.ema):
        got = net.state_dict()
        assert all(torch.equal(got[k].cpu(), v) for k, v in start.state_dict().items())
    assert trainer.model.tokenizer.vocab == start.tokenizer.vocab and trainer.model.training
    assert trainer.step == 0 and not trainer.opt.state
    trainer.run()
    init = read_config(tmp_path / "ft")["training"]["init"]
    assert init == {"model": "run", "weights_sha256": read_config(tiny_model_dir)["weights_sha256"], "steps": 40}
    Trainer(tiny_config(tmp_path / "ft", steps=5, init=str(tiny_model_dir), resume=True)).run()
    assert read_config(tmp_path / "ft")["training"]["init"] == init
    with pytest.raises(DiffuseError, match="cannot resume: the run used init="):
        Trainer(tiny_config(tmp_path / "ft", steps=6, resume=True))


def test_init_refuses_another_network_and_names_unknown_caption_words(tmp_path, tiny_model_dir):
    with pytest.raises(DiffuseError, match="is not the small preset at 32: give the --preset and --size it has"):
        Trainer(tiny_config(tmp_path / "a", init=str(tiny_model_dir), preset="small"))
    with pytest.warns(UserWarning, match=r"caption words are not in the vocabulary of .* and read as unknown"):
        Trainer(tiny_config(tmp_path / "b", data="digits", init=str(tiny_model_dir)))


def test_cli_init_takes_the_models_preset_and_a_missing_model_is_one_line(tmp_path, tiny_model_dir, capsys):
    from diffuse.cli import main
    base = ["train", "--data", "shapes", "--data-size", "64", "--batch-size", "4", "--steps", "2",
            "--preview-every", "0", "--quiet"]
    assert main(base + ["--out", str(tmp_path / "ft"), "--init", str(tiny_model_dir)]) == 0  # no --preset tiny
    assert json.loads((tmp_path / "ft" / "training_state.json").read_text())["train"]["preset"] == "tiny"
    capsys.readouterr()
    assert main(["info", str(tmp_path / "ft")]) == 0
    assert "init       from run (sha256 " in capsys.readouterr().out
    assert main(base + ["--out", str(tmp_path / "x"), "--init", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "x").exists()
