import json

import pytest
import torch
from PIL import Image

from diffuse import GenerateRequest, Pipeline, save_png
from diffuse.errors import RequestError
from diffuse.pipeline import A1111_SAMPLERS, A1111_SCHEDULES
from diffuse.samplers import SAMPLERS
from diffuse.schedules import SCHEDULES


@pytest.fixture(scope="module")
def pipe(tiny_model_dir):
    return Pipeline.load(tiny_model_dir)


@pytest.mark.parametrize("sampler", [s for s in SAMPLERS if s != "consistency"])  # the consistency sampler: consistency models only (test_distill)
def test_seeds_are_batch_independent(pipe, sampler):
    batch = pipe.sample(GenerateRequest("a blue star", n=3, seed=10, steps=5, sampler=sampler, guidance=2.0))
    alone = pipe.sample(GenerateRequest("a blue star", n=1, seed=12, steps=5, sampler=sampler, guidance=2.0))
    assert torch.allclose(batch[2:], alone, atol=1e-4)
    assert not torch.allclose(batch[0], batch[1], atol=1e-2)  # different seeds, different images


@pytest.mark.parametrize("sampler", ["dpmpp_2m", "euler_ancestral"])
def test_sample_batch_equals_one_request_at_a_time(pipe, sampler):
    kw = dict(steps=5, sampler=sampler, guidance=2.5)
    requests = [GenerateRequest("a blue star", n=2, seed=10, **kw),
                GenerateRequest("a red circle on a white background", n=1, seed=99, negative_prompt="green", **kw),
                GenerateRequest("", n=2, seed=5, **kw)]
    together = pipe.sample_batch(requests)
    alone = torch.cat([pipe.sample(r) for r in requests])
    assert together.shape == (5, 3, 32, 32)
    assert torch.allclose(together, alone, atol=1e-4)


def test_sample_batch_refuses_mixed_settings_and_edits(pipe):
    with pytest.raises(RequestError, match="must agree"):
        pipe.sample_batch([GenerateRequest("a", seed=1, steps=4), GenerateRequest("b", seed=2, steps=5)])
    with pytest.raises(RequestError, match="text-to-image only"):
        pipe.sample_batch([GenerateRequest("a", seed=1, init_image=Image.new("RGB", (32, 32)))])
    with pytest.raises(RequestError, match="needs a seed"):
        pipe.sample_batch([GenerateRequest("a")])


def test_generate_returns_images_with_parameters(pipe, tmp_path):
    images = pipe("a red circle", n=2, seed=3, steps=4, negative_prompt="green")
    assert [im.size for im in images] == [(32, 32)] * 2
    path = save_png(images[1], tmp_path / "x.png")
    meta = json.loads(Image.open(path).text["diffuse"])
    assert meta["seed"] == 4 and meta["prompt"] == "a red circle" and meta["negative_prompt"] == "green"
    assert meta["sampler"] == "dpmpp_2m" and meta["steps"] == 4 and meta["guidance"] == 2.0
    assert meta["model_hash"] == pipe.model_hash[:12] and meta["model_sha256"] == pipe.model_hash
    assert "Seed: 4" in Image.open(path).text["parameters"]


def test_each_image_of_a_variation_batch_records_the_variation_seed_it_used(pipe):
    batch = pipe("a star", n=2, seed=4, steps=1, variation_seed=9, variation_strength=0.5)
    second = json.loads(batch[1].info["diffuse"])
    assert (second["seed"], second["variation_seed"]) == (5, 10) and "Variation seed: 10," in batch[1].info["parameters"]
    alone = pipe("a star", seed=5, steps=1, variation_seed=10, variation_strength=0.5)[0]
    assert alone.tobytes() == batch[1].tobytes()


def test_random_seed_is_recorded_and_reproduces(pipe):
    first = pipe("a square", steps=3)[0]
    seed = json.loads(first.info["diffuse"])["seed"]
    again = pipe("a square", steps=3, seed=seed)[0]
    assert first.tobytes() == again.tobytes()


def test_other_sizes_and_impossible_sizes(pipe):
    assert pipe("a circle", seed=0, steps=2, width=48, height=16)[0].size == (48, 16)
    with pytest.raises(RequestError, match="width 33"):
        pipe("a circle", seed=0, steps=2, width=33)
    with pytest.raises(RequestError, match="height 1024"):
        pipe("a circle", seed=0, steps=2, height=1024)


def test_guidance_and_negative_prompt_change_the_image(pipe):
    base = pipe.sample(GenerateRequest("a red circle", seed=1, steps=4, guidance=1.0))
    guided = pipe.sample(GenerateRequest("a red circle", seed=1, steps=4, guidance=4.0))
    neg = pipe.sample(GenerateRequest("a red circle", seed=1, steps=4, guidance=4.0, negative_prompt="red"))
    assert not torch.allclose(base, guided) and not torch.allclose(guided, neg)


@pytest.mark.parametrize("kw,message", [
    ({"steps": 0}, "steps"), ({"steps": 10 ** 6}, "steps"), ({"guidance": -1.0}, "guidance"),
    ({"sampler": "magic"}, "unknown sampler"), ({"n": 0}, "n must"), ({"schedule": "x"}, "unknown schedule"),
    ({"seed": -1}, "seed"), ({"eta": -0.1}, "eta"),
    ({"seed": 2 ** 64}, r"seed must be an integer from 0 to 2\^32 - 1,"),
    ({"seed": 2 ** 32 - 2, "n": 3}, r"seed must be an integer from 0 to 2\^32 - 3 \(its 3 images use seed \+ k\)"),
    ({"variation_seed": 2 ** 64}, r"variation seed must be an integer from 0 to 2\^32 - 1,"),
    ({"variation_seed": -1}, r"variation seed must be an integer from 0 to 2\^32 - 1,"),
])
def test_bad_requests(kw, message):
    with pytest.raises(RequestError, match=message):
        GenerateRequest("x", **kw)


def test_the_largest_seeds_work(pipe):
    top = 2 ** 32 - 1
    with pytest.raises(RequestError, match="2\\^32 - 1"):
        GenerateRequest("x", seed=top + 1)  # torch's generator would draw seed 0's noise for it
    assert pipe("a star", seed=top, steps=1)[0].size == (32, 32)
    assert pipe("a star", seed=top - 1, n=2, steps=1, variation_seed=top - 1, variation_strength=0.5)[1].size == (32, 32)


def test_parameters_text_is_in_a1111s_own_words(pipe):
    """The AUTOMATIC1111 'parameters' chunk names the sampler and the schedule as A1111 writes
    them (its infotext: "Sampler: DPM++ 2M, Schedule type: Karras"), so tools that read it parse
    ours; an empty negative prompt leaves its line out, as A1111 does."""
    img = pipe("a red circle", seed=3, steps=4)[0]
    assert img.info["parameters"] == (f"a red circle\nSteps: 4, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 2.0, "
                                      f"Seed: 3, Size: 32x32, Model hash: {pipe.model_hash[:12]}, Model: {pipe.name}")
    img = pipe("a star", seed=1, steps=2, sampler="euler_ancestral", schedule="exponential", eta=0.5,
               negative_prompt="blue")[0]
    assert img.info["parameters"].startswith("a star\nNegative prompt: blue\nSteps: 2, Sampler: Euler a, "
                                             "Schedule type: Exponential, CFG scale: 2.0, Seed: 1, ")
    assert ", Eta: 0.5" in img.info["parameters"]
    assert ", Eta DDIM: 0.3" in pipe("a star", seed=1, steps=2, sampler="ddim", eta=0.3)[0].info["parameters"]
    assert set(A1111_SAMPLERS) == set(SAMPLERS) and set(A1111_SCHEDULES) == set(SCHEDULES)
    for sampler, name in (("euler", "Euler"), ("heun", "Heun"), ("ddim", "DDIM")):
        assert f"Sampler: {name}, Schedule type: VP," in pipe("a", seed=0, steps=1, sampler=sampler, schedule="vp")[0].info["parameters"]


@pytest.mark.parametrize("sampler", ["euler", "heun", "dpmpp_2m"])
def test_eta_with_a_deterministic_sampler_is_an_error(sampler):
    with pytest.raises(RequestError, match=f"eta is the noise of ddim and euler_ancestral; {sampler} adds none"):
        GenerateRequest("x", sampler=sampler, eta=0.5)
    assert GenerateRequest("x", sampler="ddim", eta=0.5).eta == 0.5
