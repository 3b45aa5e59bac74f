"""The evaluator is itself tested: real draws pass, noise, wrong prompts and collapsed sets fail."""

import dataclasses
import json

import pytest
import torch

from diffuse.cli import main
from diffuse.evaluation import TASKS, format_table, frechet_distance, load_reader, score, train_reader

SIZE = 32


@pytest.fixture(scope="session")
def reader(tmp_path_factory):
    import os
    os.environ["DIFFUSE_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    reader, info = load_reader("shapes", SIZE)
    return reader, info


@pytest.fixture(scope="session")
def prompts():
    return TASKS["shapes"].prompts()


def real_set(prompts, per_prompt, seed, shift=0):
    task = TASKS["shapes"]
    return torch.stack([task.draw_real(prompts[(i + shift) % len(prompts)].spec, SIZE, seed * 100_000 + i * 10 + k)
                        for i in range(len(prompts)) for k in range(per_prompt)])


def test_reader_reads_fresh_draws(reader):
    _, info = reader
    assert all(acc > 0.97 for acc in info["accuracy"].values()), info["accuracy"]


def test_real_draws_score_near_perfect_and_near_the_floor(reader, prompts):
    r = score(reader[0], TASKS["shapes"], real_set(prompts, 2, seed=7), prompts, 2, SIZE)
    assert r["match"]["seen"]["all"] > 0.95 and r["match"]["held-out"]["all"] > 0.95
    assert r["frechet"] < 2 * r["frechet_floor"]
    assert 0.8 < r["diversity"] < 1.25


def test_noise_scores_near_chance_with_a_large_distance(reader, prompts):
    noise = torch.rand(len(prompts) * 2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0)) * 2 - 1
    r = score(reader[0], TASKS["shapes"], noise, prompts, 2, SIZE)
    assert r["match"]["seen"]["all"] < 0.05
    assert r["frechet"] > 10 * r["frechet_floor"]


def test_images_of_the_wrong_prompt_score_low(reader, prompts):
    wrong = real_set(prompts, 2, seed=3, shift=1)  # each prompt gets its neighbour's images
    r = score(reader[0], TASKS["shapes"], wrong, prompts, 2, SIZE)
    assert r["match"]["seen"]["all"] < 0.1
    assert r["match"]["seen"]["background"] < 0.1  # neighbours differ in background by construction


def test_a_collapsed_set_is_caught_by_diversity(reader, prompts):
    one_each = real_set(prompts, 1, seed=5).repeat_interleave(2, dim=0)  # same image twice per prompt
    r = score(reader[0], TASKS["shapes"], one_each, prompts, 2, SIZE)
    assert r["match"]["seen"]["all"] > 0.95  # every image matches its prompt...
    assert r["diversity"] < 0.05              # ...but there is no variety


def test_confusion_shows_what_a_failing_model_draws_instead(reader, prompts):
    task = TASKS["shapes"]
    square = task.heads["shape"].index("square")
    # Every prompt gets a square with its other attributes: a model that draws only squares.
    squares = torch.stack([task.draw_real(dataclasses.replace(p.spec, shape="square"), SIZE, 50 + i)
                           for i, p in enumerate(prompts)])
    r = score(reader[0], task, squares, prompts, 1, SIZE)
    counts = torch.tensor(r["confusion"]["shape"])
    asked = torch.bincount(torch.tensor([p.target["shape"] for p in prompts]), minlength=len(task.heads["shape"]))
    assert counts.sum(1).tolist() == asked.tolist()          # rows: what each prompt asked for
    assert counts[:, square].sum() > 0.95 * len(prompts)     # columns: what was read
    table = format_table(r)
    assert "shape: asked for (rows)" in table                # the worst attribute gets the table
    assert r["match"]["seen"]["color"] > 0.95                # the other attributes still match


def test_frechet_distance_closed_form():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(20000, 3, generator=g, dtype=torch.float64)
    b = torch.randn(20000, 3, generator=g, dtype=torch.float64) * 2 + 1
    # N(0, I) vs N(1, 4I) in 3-d: |mu|^2 = 3, trace term 3 * (1 + 4 - 2 * 2) = 3.
    assert frechet_distance(a, b) == pytest.approx(6.0, rel=0.05)


def test_digits_reader_reads_real_digits():
    _, info = train_reader(TASKS["digits"], SIZE, n=4000, epochs=2)
    assert info["accuracy"]["digit"] > 0.9


def test_cli_eval_writes_table_and_json(reader, tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert main(["eval", str(tiny_model_dir), "--steps", "2", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "held-out" in table and "frechet distance" in table
    result = json.loads(out.read_text())
    assert set(result["match"]) == {"seen", "held-out"}
    assert result["images"] == 2 * len(TASKS["shapes"].prompts())
    assert 0 <= result["match"]["seen"]["all"] <= 1 and result["frechet"] > 0


def test_cli_eval_refuses_a_folder_model(tmp_path, capsys):
    from PIL import Image

    from diffuse.training import TrainConfig, Trainer
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(4):
        Image.new("RGB", (16, 16), (i * 60, 0, 0)).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text(f"red {i}")
    Trainer(TrainConfig(data=str(folder), out=str(tmp_path / "run"), preset="tiny", steps=1, batch_size=2,
                        preview_every=0, checkpoint_every=0, progress=False)).run()
    assert main(["eval", str(tmp_path / "run")]) == 2
    assert "eval reads the procedural datasets" in capsys.readouterr().err


def test_two_evaluation_seeds_share_no_image():
    """Every (seed, prompt, image) has its own noise stream: the images of --seed 0 and --seed 1
    (any --per-prompt) are disjoint, and a request's consecutive seeds are its images' ones."""
    from diffuse.evaluation import eval_seed
    from diffuse.pipeline import GenerateRequest
    n_prompts = len(TASKS["shapes"].prompts())

    def seeds(seed, per_prompt):
        return {s for i in range(n_prompts)
                for s in GenerateRequest("x", n=per_prompt, seed=eval_seed(seed, i)).seeds}
    assert len(seeds(0, 6)) == 6 * n_prompts and not seeds(0, 6) & seeds(1, 6) and not seeds(1, 2) & seeds(2, 6)
    assert [eval_seed(3, 5, k) for k in range(4)] == GenerateRequest("x", n=4, seed=eval_seed(3, 5)).seeds
    assert eval_seed(4095, 1023, 1023) == 2 ** 32 - 1  # torch's generator reads 32 bits of a seed
    with pytest.raises(ValueError):
        eval_seed(0, 0, 1024)
    images = [torch.randn(4, generator=torch.Generator().manual_seed(eval_seed(s, 0))) for s in (0, 1)]
    assert not torch.equal(*images)  # distinct streams, not just distinct numbers


def test_eval_reads_generated_images_as_they_would_be_saved(monkeypatch):
    """The real draws the reader compares with are 8-bit images, so generated ones must be too:
    clamped to [-1, 1] and rounded to 8 bits as a saved PNG, not unclamped floats."""
    from types import SimpleNamespace

    from diffuse import evaluation
    from diffuse.data import pil_to_tensor, tensor_to_pil
    raw = torch.randn(2 * len(TASKS["shapes"].prompts()), 3, SIZE, SIZE) * 1.5  # out of range, off the 8-bit grid
    pipe = SimpleNamespace(config={"data": {"kind": "shapes"}}, model=SimpleNamespace(image_size=SIZE),
                           name="fake", model_hash="0" * 64,
                           sample_batch=lambda reqs: raw[:sum(r.n for r in reqs)])
    seen = {}
    monkeypatch.setattr(evaluation, "load_reader", lambda *a, **k: (None, {"accuracy": {}}))
    monkeypatch.setattr(evaluation, "score", lambda reader, task, generated, *a, **k: seen.update(x=generated) or {})
    evaluation.evaluate(pipe, per_prompt=2, batch_prompts=1000)
    saved = torch.stack([pil_to_tensor(tensor_to_pil(x)) for x in raw[:len(seen["x"])]])
    assert torch.equal(seen["x"], saved)


def test_cli_eval_refuses_a_seed_out_of_range_before_any_work(tiny_model_dir, monkeypatch, capsys):
    from diffuse import evaluation

    def no_reader(*a, **k):
        raise AssertionError("the reader was loaded before the seed was checked")
    monkeypatch.setattr(evaluation, "load_reader", no_reader)
    assert main(["eval", str(tiny_model_dir), "--seed", "4096"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--seed must be between 0 and 4095" in err


def test_cli_eval_takes_the_model_as_an_option_but_not_two_models(capsys):
    assert main(["eval", "shapes", "--model", "emoji"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "eval got two models" in err


def test_read_size_is_refused_for_a_procedural_model_before_anything_runs():
    from types import SimpleNamespace
    from diffuse.errors import DiffuseError
    from diffuse.evaluation import evaluate
    pipe = SimpleNamespace(config={"data": {"kind": "shapes"}}, model=SimpleNamespace(image_size=32))
    with pytest.raises(DiffuseError, match="--read-size is for emoji models"):
        evaluate(pipe, read_size=64)
