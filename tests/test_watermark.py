"""The start-noise watermark: its marking is exact and leaves the noise Gaussian, the ODE inversion
recovers a marked noise from an exact denoiser's image, and the bundled model's images are
found marked while real images are not."""

import json
import math

import pytest
import torch
from conftest import GaussianDenoiser

from diffuse import watermark as W
from diffuse.data import as_saved, load_shapes
from diffuse.samplers import SAMPLERS
from diffuse.schedules import SIGMA_MAX, SIGMA_MIN, get_sigmas

HASH = "3a5f0c9e" + "0" * 56


def test_marking_sets_every_block_sign_and_keeps_the_rest():
    z = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    code = W.codeword(HASH, 7)
    marked = W.mark_noise(z, code)
    assert (torch.sign(W.block_means(marked)) == code).all()
    # Only block means change: the within-block residual is the same.
    up = lambda m: torch.nn.functional.interpolate(m, size=(32, 32), mode="nearest")  # noqa: E731
    assert torch.allclose(marked - up(W.block_means(marked)), z - up(W.block_means(z)), atol=1e-6)
    # Already-right blocks are untouched; |block mean| is kept.
    assert torch.allclose(W.block_means(marked).abs(), W.block_means(z).abs(), atol=1e-6)


def test_marked_noise_is_still_standard_normal():
    """Reflecting a symmetric block mean keeps N(0, I) (Gaussian Shading's lossless property);
    over seeds, the 256 codewords average out."""
    g = torch.Generator().manual_seed(1)
    z = torch.randn(2048, 3, 32, 32, generator=g)
    book = W.codebook(HASH)
    marked = W.mark_noise(z, book[torch.arange(2048) % W.NONCES])
    flat = marked.flatten()
    assert abs(flat.mean()) < 0.01 and abs(flat.std() - 1) < 0.01
    # Per pixel over images, no lean: the mean of each pixel is within noise of 0.
    assert marked.mean(0).abs().max() < 5 / math.sqrt(2048)
    # Each block mean (16 pixels) is N(0, 1/16) over images, whatever its fixed sign: |mean| keeps its law.
    m = W.block_means(marked).flatten(1)
    assert abs(m.abs().mean() * 4 - math.sqrt(2 / math.pi)) < 0.01


def test_payload_round_trip_and_key():
    z = W.mark_noise(torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(2)), W.codeword(HASH, 200))
    assert (W.decode_payload(z, 200) == W.payload_bits(HASH)).all()
    assert W.bits_hex(W.payload_bits(HASH)) == "3a5f0c9e"
    nonce, agree = W.best_nonce(z, W.codebook(HASH))
    assert (nonce == 200).all() and (agree == 192).all()
    assert W.agreement(z, W.codeword(HASH, 200, key="another key")).float().mean() < 130


def test_chance_of_agreeing_signs():
    assert W.chance_of(0, 192) == 1.0
    assert W.chance_of(192, 192) == pytest.approx(2.0 ** -192)
    assert W.chance_of(97, 192) == pytest.approx(0.5 - math.comb(192, 96) / 2 ** 193, rel=1e-9)
    assert W.p_value(192, 192) == pytest.approx(256 * 2.0 ** -192)


def test_inversion_recovers_the_start_noise_of_an_exact_denoiser(gaussian):
    """For Gaussian data the PF-ODE has a closed-form solution (a scaling): inverting the exact
    image gives z back up to the inversion's own error, and a 20-step sampler's image still
    agrees in every sign."""
    z = W.mark_noise(torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(3), dtype=torch.float64),
                     W.codeword(HASH, 3).double())
    exact = gaussian.exact(z * SIGMA_MAX, SIGMA_MAX, 0.0)
    assert torch.allclose(W.invert(gaussian, exact, steps=100).double(), z, rtol=0.01, atol=0.01)
    sigmas = get_sigmas("karras", 20, SIGMA_MIN, SIGMA_MAX).double()
    sampled = SAMPLERS["dpmpp_2m"](gaussian, z * SIGMA_MAX, sigmas)
    assert (W.agreement(W.invert(gaussian, sampled), W.codeword(HASH, 3)) == 192).all()


# ----------------------------------------------------------------------------- through the pipeline

@pytest.fixture(scope="module")
def shapes():
    from diffuse.pipeline import Pipeline
    return Pipeline.load("shapes")


def test_bundled_model_images_carry_the_mark_and_real_images_do_not(shapes):
    from diffuse.pipeline import GenerateRequest
    images = shapes.generate(GenerateRequest("a red circle on a white background", n=3, seed=40))
    for im in images:
        r = W.read_mark(shapes, im, json.loads(im.info["diffuse"]))  # inverted with its recorded prompt
        # The 32-bit payload reads back in part (RESULTS, "Watermark"); the mark is what is tested.
        assert r["found"] and r["nonce"] == W.nonce_of(json_seed(im)) and r["payload_bits_right"] >= 20, r
    real = as_saved(load_shapes(32, n=4, seed=9).images)
    from diffuse.data import tensor_to_pil
    for x in real:
        r = W.read_mark(shapes, tensor_to_pil(x), None)
        assert not r["found"] and r["p_value"] > 1e-3, r


def test_reading_a_batch_gives_what_reading_one_by_one_gives(shapes):
    """read_marks groups images by how they are inverted (recorded prompts with their guidance,
    unrecorded ones with none) and returns each image's reading in its place."""
    from diffuse.data import tensor_to_pil
    from diffuse.pipeline import GenerateRequest
    made = shapes.generate(GenerateRequest("a blue square on a black background", n=2, seed=11))
    real = tensor_to_pil(as_saved(load_shapes(32, n=1, seed=9).images)[0])
    images = [made[0], real, made[1], made[1]]
    params = [json.loads(made[0].info["diffuse"]), None, json.loads(made[1].info["diffuse"]), None]
    batch = W.read_marks(shapes, images, params)
    for im, p, r in zip(images, params, batch):
        alone = W.read_mark(shapes, im, p)
        assert r["inverted_with"] == alone["inverted_with"] and r["found"] == alone["found"], (r, alone)
        assert r["nonce"] == alone["nonce"] and abs(r["agree"] - alone["agree"]) <= 2, (r, alone)
    assert batch[0]["found"] and batch[2]["found"] and not batch[1]["found"]
    with pytest.raises(ValueError, match="2 images but 1"):
        W.read_marks(shapes, images[:2], params[:1])


def json_seed(im) -> int:
    return json.loads(im.info["diffuse"])["seed"]


def test_without_the_mark_the_noise_is_the_seeds_own(shapes):
    from diffuse.pipeline import GenerateRequest
    from diffuse.samplers import SeededNoise
    z = SeededNoise([7, 8], (3, 32, 32))()
    assert not torch.equal(shapes.start_noise(z.clone(), [7, 8]), z)
    shapes.watermark = False
    try:
        assert torch.equal(shapes.start_noise(z.clone(), [7, 8]), z)
        im = shapes.generate(GenerateRequest("a red circle", seed=7, steps=4))[0]
        assert "watermark" not in im.info["diffuse"]
    finally:
        shapes.watermark = True
    im = shapes.generate(GenerateRequest("a red circle", seed=7, steps=4))[0]
    assert '"watermark": "start-noise-v1"' in im.info["diffuse"]


def test_batch_and_single_images_are_marked_alike(shapes):
    from diffuse.pipeline import GenerateRequest
    req = GenerateRequest("a blue star", n=3, seed=11, steps=6)
    assert torch.equal(shapes.sample(req), shapes.sample_batch([req]))


def test_inspect_finds_the_mark_in_a_copy_without_metadata(shapes, tmp_path, capsys):
    """A lossless copy with the metadata stripped (what survives: RESULTS, "Watermark"), read as
    found in the wild, with the empty prompt; most such copies are found, no real image is."""
    from diffuse.cli import main
    from diffuse.pipeline import GenerateRequest
    paths = []
    for k, im in enumerate(shapes.generate(GenerateRequest("a yellow star on a navy background", n=3, seed=3))):
        paths.append(tmp_path / f"copy{k}.png")
        im.convert("RGB").save(paths[-1])  # no pnginfo: the parameters are gone
    assert main(["inspect", *map(str, paths), "--model", "shapes", "--json"]) == 0
    reports = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert all(r["parameters"] is None and r["watermark"]["inverted_with"].startswith("the empty") for r in reports)
    assert sum(r["watermark"]["found"] for r in reports) >= 2 and reports[0]["watermark"]["tried"] == ["shapes"]
    assert main(["inspect", str(paths[0]), "--no-watermark"]) == 0
    assert "not read" in capsys.readouterr().out
