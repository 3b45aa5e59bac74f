"""The `diffuse` command: smoke tests with a tiny model, and every bad input."""

import contextlib
import json
import subprocess
import sys

import pytest
import torch
from PIL import Image

from diffuse.cli import main


def run(args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_help_for_every_command(capsys):
    for cmd in (["--help"], ["train", "--help"], ["generate", "--help"], ["info", "--help"], ["img2img", "--help"],
                ["inpaint", "--help"], ["outpaint", "--help"], ["vary", "--help"]):
        with pytest.raises(SystemExit) as e:
            main(cmd)
        assert e.value.code == 0
    assert "--negative-prompt" in capsys.readouterr().out


@pytest.mark.parametrize("cmd,limit", [(["generate"], "2^32 - 1"), (["inpaint"], "2^32 - 1"), (["eval"], "4095"),
                                       (["explain", "noise"], "2^32 - 1"), (["explain", "prompt"], "2^32 - 1")])
def test_help_states_the_seed_range(capsys, cmd, limit):
    with pytest.raises(SystemExit):
        main(cmd + ["--help"])
    assert f"0 to {limit}" in " ".join(capsys.readouterr().out.split())


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
@pytest.mark.parametrize("cmd", [["generate", "x"], ["eval"], ["copies", "-n", "2"], ["explain", "prompt", "a", "b"],
                                 ["explain", "styles", "a"], ["explain", "copies", "-n", "2"]])
def test_every_command_that_runs_a_model_takes_device(tiny_model_dir, tmp_path, capsys, cmd):
    code, out, err = run(cmd + ["--model", tiny_model_dir, "--device", "cuda"], capsys)
    assert code == 2 and "--device cuda:" in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_distill_takes_device(tiny_model_dir, tmp_path, capsys):
    code, out, err = run(["distill", "--teacher", tiny_model_dir, "--out", tmp_path / "s", "--device", "cuda"], capsys)
    assert code == 2 and "--device cuda:" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "s").exists()


def test_train_generate_info(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, _ = run(["train", "--data", "shapes", "--out", out, "--preset", "tiny", "--steps", 3,
                           "--batch-size", 4, "--data-size", 64, "--preview-every", 0, "--quiet",
                           "--p-mean", -0.8, "--p-std", 1.4, "--caption-dropout", 0.2,
                           "--high-sigma-share", 0.1], capsys)
    assert code == 0 and (out / "model.safetensors").exists()
    recipe = json.loads((out / "config.json").read_text())["training"]
    assert (recipe["p_mean"], recipe["p_std"], recipe["caption_dropout"], recipe["high_sigma_share"]) == (-0.8, 1.4, 0.2, 0.1)
    code, stdout, _ = run(["generate", "a red circle", "--model", out, "-n", 3, "--seed", 5, "--steps", 3,
                           "--sampler", "heun", "--out", tmp_path / "imgs", "--grid"], capsys)
    assert code == 0
    files = stdout.split()
    assert len(files) == 4 and Image.open(files[-1]).size == (64, 64)  # 2x2 grid of 32px
    assert json.loads(Image.open(files[1]).text["diffuse"])["seed"] == 6
    grid = json.loads(Image.open(files[-1]).text["diffuse"])  # the grid records every image it shows
    assert [i["seed"] for i in grid["images"]] == [5, 6, 7] and grid["images"][0]["sampler"] == "heun"
    code, stdout, _ = run(["generate", "a blue star", "--model", out, "--steps", 2, "--out", tmp_path / "one.png"], capsys)
    assert code == 0 and (tmp_path / "one.png").exists()
    code, stdout, _ = run(["info", out], capsys)
    assert code == 0 and "3 steps" in stdout and "resumable  yes" in stdout
    code, stdout, _ = run(["info", out, "--json"], capsys)
    assert json.loads(stdout)["training"]["steps"] == 3
    code, _, _ = run(["train", "--data", "shapes", "--out", out, "--preset", "tiny", "--steps", 5, "--batch-size", 4,
                      "--data-size", 64, "--preview-every", 0, "--quiet", "--resume"], capsys)
    assert code == 0 and json.loads((out / "config.json").read_text())["training"]["steps"] == 5
    code, _, _ = run(["train", "--out", out, "--steps", 6, "--preview-every", 0, "--quiet", "--resume"], capsys)
    cfg = json.loads((out / "config.json").read_text())  # no --data: the run's own, as the help says
    assert code == 0 and cfg["training"]["steps"] == 6 and cfg["data"]["kind"] == "shapes"


@pytest.fixture
def folders(tmp_path):
    (tmp_path / "empty").mkdir()
    nocap = tmp_path / "nocap"
    nocap.mkdir()
    Image.new("RGB", (8, 8)).save(nocap / "a.png")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "a.png").write_bytes(b"garbage")
    (corrupt / "a.txt").write_text("a thing")
    (tmp_path / "notckpt").mkdir()
    return tmp_path


TRAIN = ["train", "--preset", "tiny", "--steps", "2", "--quiet"]


@pytest.mark.parametrize("args,message", [
    (TRAIN + ["--data", "{d}/missing", "--out", "{d}/o"], "does not exist"),
    (TRAIN + ["--data", "{d}/empty", "--out", "{d}/o"], "no usable captioned images"),
    (TRAIN + ["--data", "{d}/nocap", "--out", "{d}/o"], "1 without caption"),
    (TRAIN + ["--data", "{d}/corrupt", "--out", "{d}/o"], "1 unreadable"),
    (["train", "--data", "shapes", "--out", "{d}/o"], "--minutes or --steps"),
    (TRAIN + ["--out", "{d}/o"], "--data is required"),
    (TRAIN + ["--data", "shapes", "--out", "{d}/o", "--lr", "0"], "learning rate"),
    (TRAIN + ["--data", "shapes", "--out", "{d}/o", "--p-std", "0"], "p_std must be positive"),
    (TRAIN + ["--data", "shapes", "--out", "{d}/o", "--caption-dropout", "1"], "caption dropout"),
    (TRAIN + ["--data", "shapes", "--out", "{d}/o", "--high-sigma-share", "-0.1"], "high sigma share"),
    (TRAIN + ["--data", "shapes", "--out", "{d}/o", "--resume"], "does not exist"),
    (["generate", "x", "--model", "{d}/missing", "--out", "{d}/o"], "does not exist"),
    (["generate", "x", "--model", "{d}/notckpt", "--out", "{d}/o"], "has no config.json"),
    (["info", "{d}/notckpt"], "has no config.json"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(folders, capsys, args, message):
    code, out, err = run([a.format(d=folders) for a in args], capsys)
    assert code == 2
    lines = [l for l in err.splitlines() if not l.startswith("warning:")]
    assert len(lines) == 1 and lines[0].startswith("diffuse: error:") and message in lines[0], err
    assert not (folders / "o").exists()


@pytest.mark.parametrize("extra,message", [
    (["--steps", "0"], "steps must be"), (["--guidance", "-1"], "guidance must be"),
    (["--sampler", "nope"], "invalid choice"), (["--width", "33"], "width 33"), (["-n", "0"], "n must be"),
    (["--steps", "many"], "invalid int"),
    (["--seed", str(2 ** 64)], "seed must be an integer from 0 to 2^32 - 1"),
    (["--eta", "0.5"], "eta is the noise of ddim and euler_ancestral; dpmpp_2m adds none"),
    (["--variation-seed", str(2 ** 64), "--variation-strength", "0.5"], "variation seed must be an integer from 0 to 2^32 - 1"),
])
def test_bad_generate_options(tiny_model_dir, tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) if "invalid" in message else contextlib.nullcontext():
        code, out, err = run(["generate", "x", "--model", tiny_model_dir, "--out", tmp_path / "o"] + extra, capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    if "invalid" in message:
        assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_prompt_longer_than_the_text_encoder_reads_is_noted(tiny_model_dir, tmp_path, capsys):
    long = "a red circle " + " ".join(["on a white background"] * 7) + " with a thin green border"
    code, out, err = run(["generate", long, "--model", tiny_model_dir, "--steps", 1, "--seed", 0,
                          "--negative-prompt", "blue", "--out", tmp_path / "o.png"], capsys)
    assert code == 0 and (tmp_path / "o.png").exists()
    assert "note: the model reads the first 31 words of a prompt; cut from it: with a thin green border" in err
    code, out, err = run(["generate", "a red circle", "--model", tiny_model_dir, "--steps", 1, "--seed", 0,
                          "--out", tmp_path / "p.png"], capsys)
    assert code == 0 and "cut" not in err


def test_real_process_exit_code_and_no_traceback(tmp_path):
    p = subprocess.run([sys.executable, "-m", "diffuse", "generate", "x", "--model", str(tmp_path / "none")],
                       capture_output=True, text=True)
    assert p.returncode == 2 and "Traceback" not in p.stderr and p.stderr.count("\n") == 1
    p = subprocess.run([sys.executable, "-m", "diffuse", "generate", "x", "--model", "m", "--sampler", "nope"],
                       capture_output=True, text=True)
    assert p.returncode == 2 and p.stderr.count("\n") == 1


@pytest.fixture
def picture(tiny_model_dir, tmp_path, capsys):
    path = tmp_path / "in.png"
    code, _, _ = run(["generate", "a red circle", "--model", tiny_model_dir, "--seed", 0, "--steps", 3, "--out", path], capsys)
    assert code == 0
    return path


def test_edit_commands(tiny_model_dir, picture, tmp_path, capsys):
    m = ["--model", tiny_model_dir, "--steps", 4, "--seed", 1]
    code, out, err = run(["img2img", picture, "a blue square"] + m + ["--strength", 0.5, "--out", tmp_path / "a.png"], capsys)
    assert code == 0 and "img2img: strength 0.5 runs 2 of 4 steps" in err
    meta = json.loads(Image.open(tmp_path / "a.png").text["diffuse"])
    assert meta["mode"] == "img2img" and meta["steps_run"] == 2 and len(meta["init_image_sha256"]) == 64
    mask = tmp_path / "mask.png"
    m_img = Image.new("L", (32, 32), 0)
    m_img.paste(255, (0, 0, 16, 32))
    m_img.save(mask)
    code, out, err = run(["inpaint", picture, mask, "a green star"] + m + ["--out", tmp_path / "b.png"], capsys)
    assert code == 0
    b, src = Image.open(tmp_path / "b.png").convert("RGB"), Image.open(picture).convert("RGB")
    assert b.crop((16, 0, 32, 32)).tobytes() == src.crop((16, 0, 32, 32)).tobytes()
    code, out, err = run(["outpaint", picture, "a red circle"] + m + ["--right", 16, "--out", tmp_path / "c.png"], capsys)
    c = Image.open(tmp_path / "c.png")
    assert code == 0 and c.size == (48, 32) and json.loads(c.text["diffuse"])["outpaint"]["right"] == 16
    from diffuse.credentials import read_claim
    claim = read_claim((tmp_path / "c.png").read_bytes())  # the margins are signed with the rest
    assert claim.valid and claim.parameters["outpaint"]["right"] == 16
    assert c.convert("RGB").crop((0, 0, 32, 32)).tobytes() == src.tobytes()
    code, out, err = run(["vary", picture] + m + ["-n", 2, "--out", tmp_path / "v"], capsys)
    assert code == 0 and len(out.split()) == 2
    assert json.loads(Image.open(out.split()[0]).text["diffuse"])["prompt"] == "a red circle"  # read from the PNG
    code, out, err = run(["generate", "a star"] + m + ["--variation-seed", 7, "--variation-strength", 0.2,
                                                        "--out", tmp_path / "d.png"], capsys)
    assert code == 0 and "Variation seed: 7" in Image.open(tmp_path / "d.png").text["parameters"]


@pytest.mark.parametrize("make_args,message", [
    (lambda d, pic: ["img2img", d / "nope.png", "x"], "does not exist"),
    (lambda d, pic: ["img2img", d / "junk.png", "x"], "not a readable image"),
    (lambda d, pic: ["img2img", pic, "x", "--strength", "1.5"], "strength must be"),
    (lambda d, pic: ["inpaint", pic, d / "small_mask.png", "x"], "mask is 8x8 but the image is 32x32"),
    (lambda d, pic: ["inpaint", pic, d / "junk.png", "x"], "mask"),
    (lambda d, pic: ["img2img", d / "odd.png", "x"], "width 33"),
    (lambda d, pic: ["outpaint", pic, "x"], "padding"),
    (lambda d, pic: ["outpaint", pic, "x", "--left", "200"], "width 232"),
    (lambda d, pic: ["vary", d / "odd.png"], "records no prompt"),
])
def test_bad_edit_input(tiny_model_dir, picture, tmp_path, capsys, make_args, message):
    (tmp_path / "junk.png").write_bytes(b"this is no image")
    Image.new("L", (8, 8)).save(tmp_path / "small_mask.png")
    Image.new("RGB", (33, 32)).save(tmp_path / "odd.png")
    code, out, err = run(make_args(tmp_path, picture) + ["--model", tiny_model_dir, "--steps", 2,
                                                         "--out", tmp_path / "o"], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()
