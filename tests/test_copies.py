"""Copy detection against known answers: the exact denoiser of a small finite dataset copies it by
construction (it can only land on training points), Gaussian noise copies nothing, and fresh
draws from the training images' own distribution are flagged about as often as calibrated."""

import json

import pytest
import torch
from conftest import FiniteDenoiser

from diffuse.cli import main
from diffuse.copies import (TrainingSet, binomial_tail, calibrate, find_copies, pixel_space, relative, tiled_l2,
                            training_set)
from diffuse.data import as_saved, load_shapes
from diffuse.pipeline import Pipeline
from diffuse.samplers import SAMPLERS
from diffuse.schedules import karras_sigmas


def shapes_set(n: int, seed: int) -> TrainingSet:
    ds = load_shapes(32, n=n, seed=seed)
    return TrainingSet(as_saved(ds.images), ds.captions, ds.summary)


def test_tiled_l2_is_the_worst_tile():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, 3, 32, 32, generator=g) * 2 - 1
    b = a.clone()
    b[1, :, 8:16, 24:32] += 0.3  # one of the 16 tiles changed by 0.3 everywhere
    d = tiled_l2(a, b)
    assert torch.allclose(d.diagonal(), torch.tensor([0.0, 0.3, 0.0]), atol=1e-5)
    # Plain RMS over the whole image would be 0.3 / 4: the tiled distance does not dilute it.
    assert d[0, 1] > 0.3


def test_relative_distance_is_small_only_for_a_lone_near_neighbour():
    d = torch.tensor([[0.01, 1.0, 1.0, 1.0], [0.9, 1.0, 1.0, 1.1]])
    near, index, ratio = relative(d, k=4)
    assert index[0, 0] == 0 and ratio[0] < 0.02 and ratio[1] > 0.85


def test_binomial_tail():
    assert binomial_tail(0, 10, 0.1) == 1.0
    assert binomial_tail(10, 10, 0.5) == pytest.approx(0.5 ** 10)
    assert binomial_tail(2, 3, 0.5) == pytest.approx(0.5)


def test_the_exact_denoiser_of_a_finite_set_is_flagged_as_copying():
    """Sampling the ideal denoiser of 64 training images lands on them: every image a copy."""
    train = shapes_set(64, seed=0)
    den = FiniteDenoiser(train.images)
    g = torch.Generator().manual_seed(1)
    sigmas = karras_sigmas(20, sigma_max=80.0)
    x = torch.randn(40, 3, 32, 32, generator=g, dtype=torch.float64) * sigmas[0]
    samples = as_saved(SAMPLERS["dpmpp_2m"](den, x, sigmas).float())
    report = find_copies(samples, [f"s{i}" for i in range(40)], train)
    assert report["share"] >= 0.9 and report["copies"], report["share"]
    assert report["rows"][0]["pixels"]["nearest"][0]["distance"] < 0.05


def test_noise_and_fresh_draws_are_not_flagged():
    train = shapes_set(2000, seed=0)
    noise = as_saved(torch.randn(50, 3, 32, 32, generator=torch.Generator().manual_seed(2)) * 0.5)
    report = find_copies(noise, [f"n{i}" for i in range(50)], train)
    assert report["near_copies"] == 0 and not report["copies"]
    fresh = shapes_set(300, seed=1).images  # the same distribution, images it never saw
    report = find_copies(fresh, [f"f{i}" for i in range(300)], train)
    assert not report["copies"], report["share"]
    assert report["share"] <= 0.05


def test_calibration_leaves_each_image_itself_out():
    train = shapes_set(300, seed=0).images
    space = pixel_space(train)
    cal = calibrate([space], train, n=300)
    assert space.threshold > 0.05  # had an image matched itself, the 1% quantile would be 0
    assert 0 <= cal["fresh_rate"] <= 0.1 and cal["checked"] == 150


def test_training_set_is_rebuilt_from_the_checkpoint(tiny_model_dir):
    pipe = Pipeline.load(tiny_model_dir)
    train = training_set(pipe.config)
    ds = load_shapes(32, n=256, seed=0,
                     exclude=frozenset(tuple(p) for p in pipe.config["data"]["exclude"]))
    assert len(train.images) == 256 and torch.equal(train.images[:5], as_saved(ds.images[:5]))


def test_cli_copies_reports_and_draws(tiny_model_dir, tmp_path, capsys):
    out, js = tmp_path / "copies.png", tmp_path / "copies.json"
    code = main(["copies", "--model", str(tiny_model_dir), "-n", "6", "--steps", "3", "--picture", str(out),
                 "--json", str(js), "--no-credentials"])
    text = capsys.readouterr().out
    assert code == 0 and "near-copies" in text and out.exists()
    report = json.loads(js.read_text())
    assert report["generated"] == 6 and report["spaces"] == ["pixels", "features"]
    assert len(report["rows"][0]["pixels"]["nearest"]) == 3


def test_copies_picture_records_what_it_shows_and_is_signed(tiny_model_dir, tmp_path):
    from PIL import Image
    from diffuse.credentials import COMPOSITE_TRAINED, read_claim
    out = tmp_path / "copies.png"
    assert main(["explain", "copies", "--model", str(tiny_model_dir), "-n", "4", "--steps", "2", "--rows", "2",
                 "--out", str(out)]) == 0
    params = json.loads(Image.open(out).text["diffuse"])
    assert params["picture"] == "explain copies" and len(params["images"]) == 2
    assert all(len(t) == 3 for t in params["training_images"]) and params["images"][0]["steps"] == 2
    claim = read_claim(out.read_bytes())  # training images beside generated ones: a composite, said so
    assert claim.valid and claim.digital_source_type == COMPOSITE_TRAINED


def test_cli_copies_of_a_folder_of_training_images_says_copies(tiny_model_dir, tmp_path, capsys):
    from diffuse.data import tensor_to_pil
    train = training_set(Pipeline.load(tiny_model_dir).config)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(20):
        tensor_to_pil(train.images[i * 7]).save(folder / f"{i}.png")
    (folder / "notes.txt").write_text("not an image")
    assert main(["copies", "--model", str(tiny_model_dir), "--images", str(folder)]) == 0
    assert "COPIES: 100.0%" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--images", "/nonexistent"], "is not a folder"),
    (["-n", "0"], "-n must be"),
    (["--data", "/nonexistent"], "does not exist"),
])
def test_cli_copies_bad_input_is_one_line(tiny_model_dir, capsys, args, message):
    assert main(["copies", "--model", str(tiny_model_dir), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
