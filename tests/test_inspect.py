"""`diffuse inspect` and the signed files the CLI writes: the report has every field, its re-create
command makes the same pixels, --no-credentials writes an unsigned PNG, bad files are one line."""

import json
import shlex

import pytest
from PIL import Image

from diffuse.cli import main
from diffuse.credentials import read_claim
from test_credentials import rewrite_chunk


def run(args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def inspect_json(path, capsys) -> dict:
    code, out, _ = run(["inspect", "--json", "--no-watermark", path], capsys)
    assert code == 0
    return json.loads(out)


def pixels(path) -> bytes:
    return Image.open(path).convert("RGB").tobytes()


def test_a_generated_png_round_trips_through_inspect_and_its_command(tiny_model_dir, tmp_path, capsys, monkeypatch):
    first = tmp_path / "a.png"
    code, _, _ = run(["generate", "a red 'circle'", "--model", tiny_model_dir, "--seed", 3, "--steps", 2,
                      "--sampler", "euler", "--out", first], capsys)
    assert code == 0
    r = inspect_json(first, capsys)
    assert (r["format"], r["width"], r["height"]) == ("PNG", 32, 32)
    assert r["parameters"]["seed"] == 3 and r["a1111_parameters"].startswith("a red 'circle'\nSteps: 2")
    c = r["credentials"]
    assert c["valid"] and c["trusted"] and c["digital_source_type"] == "trainedAlgorithmicMedia"
    assert c["model"] == tiny_model_dir.name and len(c["model_sha256"]) == 64 and c["parameters"] == r["parameters"]
    assert c["generator"].startswith("diffuse ") and c["signer"].startswith("diffuse local signer")
    assert r["watermark"] is None and r["watermark_note"].startswith("not read")
    command = shlex.split(r["recreate"]["command"])
    assert command[:3] == ["diffuse", "generate", "a red 'circle'"] and "--seed" in command
    monkeypatch.chdir(tiny_model_dir.parent)  # --model names the model's folder, as its note says
    code, _, _ = run(command[1:] + ["--out", tmp_path / "b.png"], capsys)
    assert code == 0 and pixels(tmp_path / "b.png") == pixels(first)


def test_an_edit_names_its_input_and_remakes_the_same_pixels(tiny_model_dir, tmp_path, capsys, monkeypatch):
    source, edit = tmp_path / "in.png", tmp_path / "edit.png"
    m = ["--model", tiny_model_dir, "--steps", 2]
    assert run(["generate", "a blue square", *m, "--seed", 1, "--out", source], capsys)[0] == 0
    assert run(["img2img", source, "a red circle", *m, "--seed", 2, "--strength", 0.5, "--out", edit], capsys)[0] == 0
    r = inspect_json(edit, capsys)
    assert r["credentials"]["digital_source_type"] == "compositeWithTrainedAlgorithmicMedia"
    assert "INPUT.png stands for the input image" in r["recreate"]["note"]
    command = [str(source) if a == "INPUT.png" else a for a in shlex.split(r["recreate"]["command"])]
    monkeypatch.chdir(tiny_model_dir.parent)
    assert run(command[1:] + ["--out", tmp_path / "again.png"], capsys)[0] == 0
    assert pixels(tmp_path / "again.png") == pixels(edit)


def test_no_credentials_writes_an_unsigned_png_with_its_parameters(tiny_model_dir, tmp_path, capsys):
    path = tmp_path / "plain.png"
    code, _, _ = run(["generate", "a red circle", "--model", tiny_model_dir, "--seed", 0, "--steps", 1,
                      "--no-credentials", "--out", path], capsys)
    assert code == 0 and read_claim(path.read_bytes()) is None
    assert json.loads(Image.open(path).text["diffuse"])["seed"] == 0
    code, out, _ = run(["inspect", "--no-watermark", path], capsys)
    assert code == 0 and "credentials  none (no C2PA manifest)" in out and "re-create    diffuse generate" in out


def test_a_tampered_file_reads_invalid_in_the_report(tiny_model_dir, tmp_path, capsys):
    path = tmp_path / "t.png"
    assert run(["generate", "a red circle", "--model", tiny_model_dir, "--seed", 0, "--steps", 1, "--out", path],
               capsys)[0] == 0
    path.write_bytes(rewrite_chunk(path.read_bytes(), b"tEXt", lambda d: d.replace(b"red", b"tan")))
    code, out, _ = run(["inspect", "--no-watermark", path], capsys)
    assert code == 0 and "INVALID" in out and "assertion.dataHash.mismatch" in out
    assert not inspect_json(path, capsys)["credentials"]["valid"]


def test_unreadable_files_are_one_line_each_and_the_rest_are_inspected(tmp_path, capsys):
    (tmp_path / "junk.png").write_bytes(b"this is no image")
    Image.new("RGB", (8, 8)).save(tmp_path / "photo.png")
    code, out, err = run(["inspect", tmp_path / "missing.png", tmp_path / "junk.png", tmp_path / "photo.png"], capsys)
    assert code == 2
    assert err.splitlines() == [f"diffuse: error: {str(tmp_path / 'missing.png')!r} does not exist",
                                f"diffuse: error: {str(tmp_path / 'junk.png')!r} is not an image diffuse can read"]
    assert out.startswith(f"{tmp_path / 'photo.png'}: PNG 8x8") and "parameters   none by diffuse" in out
    assert "credentials  none" in out


@pytest.mark.parametrize("cmd", [["generate"], ["img2img"], ["inpaint"], ["outpaint"], ["vary"], ["explain", "noise"],
                                 ["explain", "denoise"], ["explain", "guidance"], ["explain", "prompt"],
                                 ["explain", "styles"]])
def test_every_command_that_writes_images_can_leave_credentials_out(cmd, capsys):
    with pytest.raises(SystemExit):
        main(cmd + ["--help"])
    assert "--no-credentials" in capsys.readouterr().out


def test_inspect_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["inspect", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert e.value.code == 0 and "--json" in help_text and "unchanged since it was signed" in help_text



def test_explain_pictures_are_signed_and_a_gif_gives_its_signed_parameters(tiny_model_dir, tmp_path, capsys):
    strip = tmp_path / "den.png"
    code, _, _ = run(["explain", "denoise", "a red circle", "--model", tiny_model_dir, "--steps", 2, "--out", strip],
                     capsys)
    assert code == 0
    png, gif = inspect_json(strip, capsys), inspect_json(strip.with_suffix(".gif"), capsys)
    assert png["credentials"]["valid"] and gif["credentials"]["valid"]
    assert gif["parameters_from"] == "content credentials" and gif["parameters"] == png["parameters"]
    assert gif["recreate"]["command"] == png["recreate"]["command"]
    assert png["recreate"]["command"].startswith("diffuse explain denoise 'a red circle' --model ")
