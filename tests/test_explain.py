import json

import numpy as np
import pytest
import torch
from PIL import Image

from diffuse import GenerateRequest, Pipeline
from diffuse.cli import main
from diffuse.errors import DiffuseError
from diffuse.explain import (LABEL_H, denoise_strip, forward_process, guidance_row, noise_strip, plot_run,
                             prompt_grid, snr)


@pytest.fixture(scope="module")
def pipe(tiny_model_dir):
    return Pipeline.load(tiny_model_dir)


def test_forward_process_noise_grows_as_sigma_says():
    y = torch.rand(3, 64, 64) * 2 - 1
    sigmas = [0.0, 0.1, 0.5, 2.0, 80.0]
    xs = forward_process(y, sigmas, seed=1)
    for x, s in zip(xs, sigmas):
        assert (x - y).std().item() == pytest.approx(s, rel=0.03, abs=1e-6)
    assert snr(y, 0.5) == pytest.approx(y.var().item() / 0.25) and snr(y, 0) == float("inf")


def test_noise_strip_layout_and_measured_noise_levels():
    sigmas = [0.0, 0.05, 0.1, 0.2]
    strip = noise_strip(Image.new("RGB", (40, 40), (128, 128, 128)), sigmas, size=64, seed=0)
    tile = 128  # 64 px shown at 2x
    assert strip.size == (len(sigmas) * tile, tile + LABEL_H)
    a = np.asarray(strip).astype(np.float64)
    for k, s in enumerate(sigmas):
        pixels = a[:tile, k * tile:(k + 1) * tile] / 127.5
        shown = s * 0.5 / np.sqrt(s ** 2 + 0.25)  # x = sigma n on a mid-grey image, scaled for display
        assert pixels.std() == pytest.approx(shown, rel=0.1, abs=0.01)
    with pytest.raises(DiffuseError):
        noise_strip(Image.new("RGB", (8, 8)), [-1.0])


def test_denoise_strip_has_a_column_and_a_frame_per_step(pipe):
    strip, frames = denoise_strip(pipe, GenerateRequest("a red circle", seed=0, steps=5))
    assert len(frames) == 5
    assert strip.size == (6 * 96, 2 * (96 + LABEL_H))  # 5 steps + the final image, 32 px at 3x
    assert frames[0].size == (2 * 128, 128 + LABEL_H)


def test_guidance_row_and_prompt_grid(pipe):
    row = guidance_row(pipe, GenerateRequest("a red circle", seed=0, steps=3), [0, 1, 4])
    assert row.size == (3 * 96, 96 + LABEL_H)
    tiles = [np.asarray(row)[:96, k * 96:(k + 1) * 96] for k in range(3)]
    assert not np.array_equal(tiles[0], tiles[2])
    grid = prompt_grid(pipe, ["a shape", "a large red circle on a white background"], n=3, seed=0, steps=3)
    assert grid.size == (3 * 96, 2 * (96 + LABEL_H))


def test_explain_pictures_record_their_prompts_seeds_and_model(pipe):
    """As every generated PNG does: each tile's parameters (prompt, seed, model hash, ...) in
    reading order under 'diffuse', and A1111's 'parameters' of the first."""
    grid = prompt_grid(pipe, ["a shape", "a red circle"], n=2, seed=5, steps=2)
    tiles = json.loads(grid.info["diffuse"])["images"]
    assert [(t["prompt"], t["seed"]) for t in tiles] == [("a shape", 5), ("a shape", 6), ("a red circle", 5), ("a red circle", 6)]
    assert {t["model_hash"] for t in tiles} == {pipe.model_hash[:12]} and {t["steps"] for t in tiles} == {2}
    assert grid.info["parameters"].startswith("a shape\nSteps: 2, ") and "Seed: 5," in grid.info["parameters"]
    row = guidance_row(pipe, GenerateRequest("a red circle", seed=3, steps=2), [0, 4])
    assert [(t["guidance"], t["seed"]) for t in json.loads(row.info["diffuse"])["images"]] == [(0.0, 3), (4.0, 3)]
    strip, _ = denoise_strip(pipe, GenerateRequest("a red circle", seed=7, steps=2))
    assert [t["seed"] for t in json.loads(strip.info["diffuse"])["images"]] == [7]
    noise = json.loads(noise_strip(Image.new("RGB", (8, 8)), [0.0, 1.0], size=16, seed=4).info["diffuse"])
    assert noise["seed"] == 4 and noise["sigmas"] == [0.0, 1.0] and len(noise["init_image_sha256"]) == 64


def test_plot_reads_a_real_log_and_fails_clearly(tiny_model_dir, tmp_path):
    out = plot_run(tiny_model_dir, tmp_path / "curves.png")
    assert Image.open(out).size[0] > 300
    with pytest.raises(DiffuseError, match="no training log"):
        plot_run(tmp_path, tmp_path / "x.png")
    (tmp_path / "log.jsonl").write_text("")
    with pytest.raises(DiffuseError, match="no training steps"):
        plot_run(tmp_path, tmp_path / "x.png")


def test_explain_and_plot_commands(tiny_model_dir, tmp_path, capsys):
    img = tmp_path / "in.png"
    Image.new("RGB", (32, 32), (200, 30, 30)).save(img)
    m = ["--model", str(tiny_model_dir)]
    assert main(["explain", "noise", str(img), "--sigmas", "0", "1", "10", "--out", str(tmp_path / "n.png")]) == 0
    assert Image.open(tmp_path / "n.png").size == (3 * 128, 128 + LABEL_H)
    assert main(["explain", "denoise", "a red circle", *m, "--steps", "4", "--out", str(tmp_path / "d.png")]) == 0
    with Image.open(tmp_path / "d.gif") as gif:
        assert gif.n_frames == 4
    assert main(["explain", "guidance", "a star", *m, "--steps", "2", "--scales", "1", "3", "--out", str(tmp_path / "g.png")]) == 0
    assert main(["explain", "prompt", "a shape", "a red star", *m, "--steps", "2", "-n", "2", "--out", str(tmp_path / "p.png")]) == 0
    assert main(["plot", str(tiny_model_dir), "--out", str(tmp_path / "c.png")]) == 0
    saved = {name: Image.open(tmp_path / name).text for name in ("n.png", "d.png", "g.png", "p.png")}
    assert all("diffuse" in text for text in saved.values())  # `make demo`'s grid is explain prompt's picture
    assert [(i["prompt"], i["seed"]) for i in json.loads(saved["p.png"]["diffuse"])["images"]] == \
        [("a shape", 0), ("a shape", 1), ("a red star", 0), ("a red star", 1)]
    assert "Sampler: DPM++ 2M" in saved["p.png"]["parameters"]
    capsys.readouterr()
    assert main(["plot", str(tmp_path)]) == 2
    assert "no training log" in capsys.readouterr().err
    assert main(["explain", "guidance", "a star", *m, "--scales", "-1", "--out", str(tmp_path / "x.png")]) == 2
    assert main(["explain", "prompt", "only one", *m, "--out", str(tmp_path / "x.png")]) == 2
    assert main(["explain", "noise", str(tmp_path / "missing.png"), "--out", str(tmp_path / "x.png")]) == 2
    assert not (tmp_path / "x.png").exists()


def test_explain_noise_refuses_a_seed_out_of_range(tmp_path, capsys):
    Image.new("RGB", (8, 8)).save(tmp_path / "in.png")
    assert main(["explain", "noise", str(tmp_path / "in.png"), "--seed", str(2 ** 64), "--out", str(tmp_path / "n.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "seed must be an integer from 0 to 2^32 - 1" in err
    assert not (tmp_path / "n.png").exists()


def test_explain_styles_draws_one_row_per_style_at_one_seed(pipe, tiny_model_dir, tmp_path, capsys):
    from diffuse.explain import model_styles, style_grid
    assert model_styles(pipe) == [] and model_styles(Pipeline.load("emoji")) == ["twemoji", "noto", "openmoji"]
    grid = style_grid(pipe, ["a circle", "a star"], ["red", "blue", "green"], seed=5, steps=2)
    assert grid.size == (2 * 3 * 32, 3 * (3 * 32 + LABEL_H))
    cells = [(i["prompt"], i["seed"]) for i in json.loads(grid.info["diffuse"])["images"]]
    assert cells == [(f"{s}, {c} style", 5) for c in ("red", "blue", "green") for s in ("a circle", "a star")]
    # each cell is the image that prompt and seed give on their own (batched sampling changes nothing)
    alone = pipe.sample(GenerateRequest("a star, blue style", seed=5, steps=2))[0]
    tile = np.asarray(grid.crop((3 * 32, 3 * 32 + LABEL_H, 6 * 32, 6 * 32 + LABEL_H)).resize((32, 32), Image.NEAREST))
    expect = np.asarray(Image.fromarray(((alone.permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round().byte().numpy()))
    assert np.abs(tile.astype(int) - expect.astype(int)).max() <= 1
    m = ["--model", str(tiny_model_dir), "--steps", "2"]
    assert main(["explain", "styles", "a circle", *m, "--out", str(tmp_path / "x.png")]) == 2
    assert "records no styles: name them with --styles" in capsys.readouterr().err
    assert main(["explain", "styles", "a circle", *m, "--styles", "red, blue", "--out", str(tmp_path / "s.png")]) == 0
    assert Image.open(tmp_path / "s.png").size == (3 * 32, 2 * (3 * 32 + LABEL_H))
