import json

import pytest
import torch
from safetensors.torch import load_file

from diffuse.denoiser import EDMLoss
from diffuse.errors import DiffuseError
from diffuse.pipeline import GenerateRequest, Pipeline
from diffuse.training import Trainer, batch_indices, ema_beta, learning_rate
from conftest import tiny_config


def _fixed_loss(model, data):
    g = torch.Generator().manual_seed(123)
    y = data.images[:64]
    sigma, noise = EDMLoss().sample_sigma(64, g), torch.randn(y.shape, generator=g)
    with torch.no_grad():
        return EDMLoss()(model, y, model.encode(data.captions[:64]), sigma, noise).mean().item()


def test_training_lowers_the_loss(tmp_path):
    trainer = Trainer(tiny_config(tmp_path / "run", steps=60))
    before = _fixed_loss(trainer.model, trainer.data)
    trainer.run()
    after = _fixed_loss(trainer.model, trainer.data)
    assert after < 0.8 * before, (before, after)
    rows = [json.loads(r) for r in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
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
    steps = [json.loads(r)["step"] for r in (tmp_path / "split" / "log.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))


def test_checkpoint_round_trip_gives_identical_images(tmp_path):
    trainer = Trainer(tiny_config(tmp_path / "run", steps=5))
    trainer.run()
    req = GenerateRequest("a red circle", n=2, seed=5, steps=6)
    direct = Pipeline(trainer.ema).sample(req)
    loaded = Pipeline.load(tmp_path / "run").sample(req)
    assert torch.equal(direct, loaded)


def test_existing_run_is_not_overwritten_and_resume_needs_a_checkpoint(tmp_path):
    Trainer(tiny_config(tmp_path / "run", steps=2)).run()
    with pytest.raises(DiffuseError, match="--resume"):
        Trainer(tiny_config(tmp_path / "run", steps=2))
    with pytest.raises(DiffuseError, match="does not exist"):
        Trainer(tiny_config(tmp_path / "other", steps=2, resume=True))
    with pytest.raises(DiffuseError, match="cannot resume: the run used seed"):
        Trainer(tiny_config(tmp_path / "run", steps=4, resume=True, seed=9))


def test_preview_grid_is_written(tmp_path):
    Trainer(tiny_config(tmp_path / "run", steps=2, preview_every=2)).run()
    from PIL import Image
    img = Image.open(tmp_path / "run" / "previews" / "step_0000002.png")
    assert img.size == (4 * 32, 4 * 32)


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


@pytest.mark.parametrize("kw,message", [({"steps": None}, "budget"), ({"steps": 0}, "steps"),
                                        ({"batch_size": 0}, "batch_size"), ({"lr": -1.0}, "learning rate"),
                                        ({"image_size": 48}, "image size"), ({"lr_schedule": "step"}, "lr schedule"),
                                        ({"lr_schedule": "cosine", "steps": None, "minutes": 1.0}, "needs --steps"),
                                        ({"p_std": 0.0}, "p_std"), ({"high_sigma_share": 1.5}, "high sigma share")])
def test_bad_training_config(tmp_path, kw, message):
    with pytest.raises(DiffuseError, match=message):
        tiny_config(tmp_path, **kw)
