import json
import warnings

import pytest
import torch
from PIL import Image

from diffuse.data import (COLORS, HELD_OUT, SHAPES, draw_shape, example_prompts, load_dataset, load_digits,
                          load_image_folder, load_shapes, resize_center_crop)
from diffuse.errors import DataError


def _img(path, size=(40, 30), color=(255, 0, 0)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def test_image_folder_metadata_sidecars_and_nested(tmp_path):
    _img(tmp_path / "a.png")
    _img(tmp_path / "sub" / "b.jpg", color=(0, 255, 0))
    _img(tmp_path / "sub" / "deeper" / "c.png", (20, 50), (0, 0, 255))
    (tmp_path / "metadata.jsonl").write_text(json.dumps({"file_name": "a.png", "text": "a red thing"}) + "\n")
    (tmp_path / "sub" / "metadata.jsonl").write_text(json.dumps({"file_name": "b.jpg", "text": "green"}) + "\n")
    (tmp_path / "sub" / "deeper" / "c.txt").write_text("blue one\n")
    ds = load_image_folder(tmp_path, 16)
    assert sorted(ds.captions) == ["a red thing", "blue one", "green"]
    assert ds.images.shape == (3, 3, 16, 16) and ds.images.min() >= -1 and ds.images.max() <= 1
    blue = ds.images[ds.captions.index("blue one")]
    assert blue[2].mean() > 0.9 and blue[0].mean() < -0.9


def test_resize_center_crop_keeps_the_middle():
    img = Image.new("RGB", (60, 20), (0, 0, 0))
    img.paste((255, 255, 255), (20, 0, 40, 20))  # white middle third
    out = resize_center_crop(img, 10)
    assert out.size == (10, 10)
    assert min(out.convert('L').tobytes()) > 200  # only the white middle survives


def test_bad_and_uncaptioned_files_are_skipped_and_counted(tmp_path):
    _img(tmp_path / "good.png")
    (tmp_path / "good.txt").write_text("good")
    (tmp_path / "broken.png").write_bytes(b"not a png at all")
    (tmp_path / "broken.txt").write_text("broken")
    _img(tmp_path / "nocaption.png")
    with pytest.warns(UserWarning, match="1 image.s. without a caption and 1 unreadable"):
        ds = load_image_folder(tmp_path, 8)
    assert ds.captions == ["good"] and ds.summary["skipped_unreadable"] == 1


@pytest.mark.parametrize("setup,message", [
    (lambda p: None, "no usable captioned images"),
    (lambda p: _img(p / "x.png"), "0 without caption|1 without caption"),
    (lambda p: ((p / "x.png").write_bytes(b"junk"), (p / "x.txt").write_text("x")), "1 unreadable"),
    (lambda p: (p / "metadata.jsonl").write_text("{not json\n"), "metadata.jsonl:1"),
])
def test_unusable_folders_are_clear_errors(tmp_path, setup, message):
    setup(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DataError, match=message):
            load_image_folder(tmp_path, 8)


def test_several_captions_and_held_out_rows(tmp_path):
    _img(tmp_path / "a.png", color=(255, 0, 0))
    _img(tmp_path / "b.png", color=(0, 0, 255))
    _img(tmp_path / "c.png", color=(0, 255, 0))
    rows = [{"file_name": "a.png", "text": "red", "captions": ["red", "a red square", "crimson"]},
            {"file_name": "b.png", "text": "blue"},
            {"file_name": "c.png", "text": "green", "held_out": True}]
    (tmp_path / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    ds = load_image_folder(tmp_path, 8)
    assert sorted(ds.captions) == ["a red square", "blue", "crimson", "red"]  # one example per caption
    assert all(ds.images[ds.captions.index(c)][0].mean() > 0.9 for c in ("red", "a red square", "crimson"))
    assert ds.images[ds.captions.index("blue")][2].mean() > 0.9
    assert ds.summary["images"] == 2 and ds.summary["examples"] == 4 and ds.summary["held_out"] == 1
    everything = load_dataset(str(tmp_path), 8, holdout=False)
    assert "green" in everything.captions and len(everything) == 5


@pytest.mark.parametrize("captions", [[], "one string", [1, 2]])
def test_bad_captions_lists_are_clear_errors(tmp_path, captions):
    _img(tmp_path / "a.png")
    (tmp_path / "metadata.jsonl").write_text(json.dumps({"file_name": "a.png", "text": "x", "captions": captions}))
    with pytest.raises(DataError, match="metadata.jsonl:1: .*'captions' as a list of strings"):
        load_image_folder(tmp_path, 8)


def test_missing_path_and_file_path(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(str(tmp_path / "nope"), 32)
    (tmp_path / "f").write_text("x")
    with pytest.raises(DataError, match="not a folder"):
        load_dataset(str(tmp_path / "f"), 32)


def test_shapes_are_deterministic_varied_and_captioned():
    a, b = load_shapes(32, n=300, seed=3), load_shapes(32, n=300, seed=3)
    assert torch.equal(a.images, b.images) and a.captions == b.captions
    assert not torch.equal(a.images, load_shapes(32, n=300, seed=4).images)
    text = " ".join(a.captions)
    assert all(s in text for s in SHAPES) and all(c in text for c in COLORS)
    assert len(set(a.captions)) > 200  # varied wording and attributes


def test_shape_caption_matches_pixels():
    img, caption, spec = draw_shape(5, 32, seed=0)
    assert spec.color in caption and spec.shape in caption
    from diffuse.data import BACKGROUNDS
    corner = img.getpixel((0, 0))
    assert max(abs(c - r) for c, r in zip(corner, BACKGROUNDS[spec.background])) <= 10


def test_shapes_exclude_pairs():
    ds = load_shapes(32, n=400, exclude=frozenset({("circle", "red")}))
    assert not any({"circle", "red"} <= set(c.replace(",", " ").split()) for c in ds.captions)
    assert any({"circle", "blue"} <= set(c.replace(",", " ").split()) for c in ds.captions)


def test_digits_are_captioned_with_their_class():
    ds = load_digits(32)
    assert len(ds) == 1797 and ds.images.shape[1:] == (3, 32, 32)
    from sklearn.datasets import load_digits as sk
    target = sk().target
    from diffuse.data import DIGIT_WORDS
    for i in range(20):
        assert str(target[i]) in ds.captions[i] or DIGIT_WORDS[target[i]] in ds.captions[i]


def test_shapes_hold_out_pairs_by_default():
    from diffuse.data import HELD_OUT, load_dataset
    held = load_dataset("shapes", 16, shapes=400)
    pairs = {tuple(p) for p in held.summary["exclude"]}
    assert pairs == set(HELD_OUT)
    for caption in held.captions:
        assert not any(f"{c} {s}" in caption or f"{s} colored {c}" in caption for s, c in HELD_OUT)
    assert load_dataset("shapes", 16, shapes=400, holdout=False).summary["exclude"] == []


def test_example_prompts_come_from_the_data_summary(tmp_path):
    """What the web page offers as examples: a folder's summary keeps a few of its captions, spread
    over the set; shapes' are made as its captions are, one per shape and no held-out pair."""
    rows = [{"file_name": f"{k}.png", "text": f"thing number {k}"} for k in range(12)]
    for row in rows:
        _img(tmp_path / row["file_name"])
    (tmp_path / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = load_image_folder(tmp_path, 16).summary
    assert summary["prompts"] == [f"thing number {k}" for k in (0, 10, 2, 4, 6, 8)]  # files in name order
    assert example_prompts(summary) == summary["prompts"]
    shapes = example_prompts({"kind": "shapes", "exclude": [list(p) for p in HELD_OUT]})
    assert len(shapes) == 6 and {p.split()[3] for p in shapes} == set(SHAPES)
    assert not any(f"{color} {shape}" in p for p in shapes for shape, color in HELD_OUT)
    assert example_prompts({"kind": "folder"}) == [] and len(example_prompts({"kind": "digits"})) == 6
