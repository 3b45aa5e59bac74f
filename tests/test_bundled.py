"""The model the project ships loads, generates and stays within its size budget."""

from PIL import Image

from diffuse.checkpoint import BUNDLED_MODEL, read_config
from diffuse.cli import main
from diffuse.pipeline import Pipeline


def test_bundled_model_is_small_and_complete():
    size = sum(f.stat().st_size for f in BUNDLED_MODEL.iterdir())
    assert size <= 25 * 2 ** 20
    cfg = read_config(BUNDLED_MODEL)
    assert cfg["data"]["kind"] == "shapes" and cfg["data"]["exclude"]  # trained with held-out pairs


def test_bundled_model_generates_by_default(tmp_path):
    pipe = Pipeline.load()
    assert pipe.name == "bundled-shapes"
    img, = pipe("a red circle on a white background", seed=0, steps=4)
    assert img.size == (32, 32)
    assert main(["generate", "a red circle", "--seed", "1", "--steps", "4", "--out", str(tmp_path / "x.png")]) == 0
    assert Image.open(tmp_path / "x.png").text["diffuse"].count("bundled-shapes") == 1
