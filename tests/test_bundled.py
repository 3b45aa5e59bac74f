"""The model the project ships loads, generates and stays within its size budget."""

import torch
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
    assert pipe.name == "shapes"
    img, = pipe("a red circle on a white background", seed=0, steps=4)
    assert img.size == (32, 32)
    assert main(["generate", "a red circle", "--seed", "1", "--steps", "4", "--out", str(tmp_path / "x.png")]) == 0
    assert Image.open(tmp_path / "x.png").text["diffuse"].count('"model": "shapes"') == 1


def test_bundled_emoji_model_is_within_budget_credits_its_sources_and_draws(tmp_path):
    from diffuse.checkpoint import BUNDLED_MODELS
    d = BUNDLED_MODELS["emoji"]
    assert sum(f.stat().st_size for f in d.iterdir()) <= 50 * 2 ** 20
    cfg = read_config(d)
    assert cfg["data"]["emoji"]["styles"] == ["twemoji", "noto", "openmoji"] and cfg["data"]["held_out"] > 0
    credits = (d / "LICENSES.md").read_text()
    assert "CC BY 4.0" in credits and "CC BY-SA 4.0" in credits and "Open Font License" in credits
    assert main(["generate", "a red apple, twemoji style", "--model", "emoji", "--seed", "3", "--steps", "4",
                 "--out", str(tmp_path / "apple.png")]) == 0
    img = Image.open(tmp_path / "apple.png")
    assert img.size == (32, 32) and '"model": "emoji"' in img.text["diffuse"]


def test_bundled_models_offer_example_prompts_in_their_own_words():
    """The web page's example prompts (config.json's data.prompts, chosen from each model's training
    captions): six each, every word one the model knows."""
    from diffuse.checkpoint import BUNDLED_MODELS
    from diffuse.data import example_prompts
    from diffuse.text_encoder import WordTokenizer
    for name, d in BUNDLED_MODELS.items():
        cfg = read_config(d)
        prompts = example_prompts(cfg["data"])
        assert len(prompts) == 6 and prompts == cfg["data"]["prompts"], name
        tokenizer = WordTokenizer.from_config(cfg["tokenizer"])
        assert all(tokenizer.unknown_words(p) == [] for p in prompts), name


def test_a_bundled_name_means_the_bundled_model_and_a_path_means_a_folder(tiny_model_dir, tmp_path, monkeypatch):
    import shutil
    from diffuse.checkpoint import BUNDLED_MODELS, model_dir
    monkeypatch.chdir(tmp_path)
    shutil.copytree(tiny_model_dir, tmp_path / "emoji")  # a user's own run named like a bundled model
    assert model_dir("emoji") == BUNDLED_MODELS["emoji"] and model_dir("./emoji").resolve() == tmp_path / "emoji"
    own = Pipeline.load("./emoji")
    assert own.model_hash == read_config(tiny_model_dir)["weights_sha256"] != Pipeline.load("emoji").model_hash


def test_bundled_fast_model_is_shapes_distilled_and_draws_in_its_own_steps(tmp_path):
    import json
    from diffuse.checkpoint import BUNDLED_MODELS
    d = BUNDLED_MODELS["shapes-fast"]
    assert sum(f.stat().st_size for f in d.iterdir()) <= 25 * 2 ** 20
    record = read_config(d)["distilled"]
    assert record["teacher"] == "shapes" and record["teacher_sha256"] == read_config(BUNDLED_MODEL)["weights_sha256"]
    pipe = Pipeline.load("shapes-fast")
    img, = pipe("a red circle on a white background", seed=0)
    params = json.loads(img.info["diffuse"])
    assert (params["model"], params["steps"], params["sampler"]) == ("shapes-fast", 4, record["sampler"])
    assert (params["schedule"], record.get("any_steps")) == ("cm", None)  # a multistep consistency model
    assert main(["generate", "a blue star", "--model", "shapes-fast", "--steps", "1", "--seed", "2",
                 "--out", str(tmp_path / "one.png")]) == 2  # it samples only in its own 4 steps
    assert not (tmp_path / "one.png").exists()


def test_the_shipped_emoji_reader_is_of_the_bundled_models_build_loads_and_credits_its_sources():
    """The evaluator's reader shipped for the 32-px emoji build (emoji_eval.load_emoji_reader uses
    it where a build's fingerprint is its own): the bundled model's build, this reader version."""
    from diffuse.checkpoint import BUNDLED_MODELS
    from diffuse.emoji import STYLES
    from diffuse.emoji_eval import READER_VERSION, SHIPPED_READERS
    from diffuse.evaluation import Reader, open_cached_reader
    d = SHIPPED_READERS / "emoji-32"
    built = read_config(BUNDLED_MODELS["emoji"])["data"]["emoji"]
    reader, info = open_cached_reader(d, lambda i: Reader({"concept": i["concepts"], "style": len(STYLES)},
                                                           width=i["width"], features=i["features"]))
    assert info["version"] == READER_VERSION and len(info["fingerprint"]) == 10
    assert info["build"]["sources"] == built["sources"] and info["concepts"] == built["concepts"]
    assert 0.3 < info["accuracy"]["concept_top5"] < 1 and info["accuracy"]["style"] > 0.8  # stated, not a ceiling
    assert sum(f.stat().st_size for f in d.iterdir()) <= 10 * 2 ** 20
    credits = (d / "LICENSES.md").read_text()
    assert "CC BY 4.0" in credits and "CC BY-SA 4.0" in credits and "Open Font License" in credits
    assert reader(torch.zeros(2, 3, 32, 32))["concept"].shape == (2, built["concepts"])
