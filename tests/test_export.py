"""The one way out (export.py): every picture leaves with its parameters, signed when the
exporter signs; a picture that records nothing is refused; files appear whole or not at all."""

import base64
import io
import json

import pytest
from PIL import Image

from conftest import MADE_PARAMS as PARAMS, made_image as made
from diffuse.credentials import TRAINED, load_credentials, read_claim
from diffuse.errors import DiffuseError
from diffuse.export import Exporter
from diffuse.provenance import inspect_image


@pytest.mark.parametrize("signed", [False, True])
def test_a_picture_that_records_no_parameters_is_refused(tmp_path, signed):
    export = Exporter(load_credentials() if signed else None)
    bare, not_json = Image.new("RGB", (8, 8)), Image.new("RGB", (8, 8))
    not_json.info["diffuse"] = "[1, 2]"
    (tmp_path / "keep.png").write_bytes(b"earlier")
    for picture in (bare, not_json):
        with pytest.raises(DiffuseError, match="records no diffuse parameters") as e:
            export.save(picture, tmp_path / "keep.png")
        assert "\n" not in str(e.value)
    assert (tmp_path / "keep.png").read_bytes() == b"earlier"  # nothing written over it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.png"]  # and no temporary file left


def test_save_writes_parameters_extra_and_signature_in_one_step(tmp_path):
    path = Exporter(load_credentials()).save(made(), tmp_path / "sub" / "a.png", {"outpaint": {"right": 16}})
    back = Image.open(path)
    assert json.loads(back.text["diffuse"]) == {**PARAMS, "outpaint": {"right": 16}}
    assert back.text["parameters"] == made().info["parameters"]
    claim = read_claim(path.read_bytes())
    assert claim.valid and claim.parameters == {**PARAMS, "outpaint": {"right": 16}}  # the signed words are the text's
    assert claim.digital_source_type == TRAINED
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.png"]
    unsigned = Exporter().save(made(), tmp_path / "b.png")
    assert read_claim(unsigned.read_bytes()) is None and json.loads(Image.open(unsigned).text["diffuse"]) == PARAMS
    assert base64.b64decode(Exporter().b64(made())) == unsigned.read_bytes()  # b64_json is the same file


@pytest.mark.parametrize("signed", [False, True])
def test_an_animation_records_its_parameters(tmp_path, signed):
    frames = [made(), Image.new("RGB", (32, 32), (0, 0, 200))]
    path = Exporter(load_credentials() if signed else None).gif(frames, tmp_path / "a.gif", PARAMS)
    report = inspect_image(path)
    assert report["format"] == "GIF" and report["parameters"] == PARAMS
    assert report["parameters_from"] == ("content credentials" if signed else "gif comment")
    assert (report["credentials"] is not None and report["credentials"]["valid"]) == signed
    assert Image.open(path).n_frames == 2
    with pytest.raises(DiffuseError):
        Exporter().gif(frames, tmp_path / "b.gif", {})


def test_a_stream_preview_carries_its_parameters_unsigned():
    url = Exporter.preview(Image.new("RGB", (16, 16)), {"picture": "preview", "step": 3, "images": [PARAMS]})
    assert url.startswith("data:image/png;base64,")
    data = base64.b64decode(url.split(",", 1)[1])
    assert json.loads(Image.open(io.BytesIO(data)).text["diffuse"])["images"] == [PARAMS]
    assert read_claim(data) is None
