"""Editing against the exact denoiser of a tiny finite dataset, then through the pipeline."""

import json

import pytest
import torch
from PIL import Image

from diffuse import GenerateRequest, Pipeline
from diffuse.data import pil_to_tensor
from diffuse.editing import (EditPlan, InpaintDenoiser, img2img_sigmas, mask_tensor, noised_start, outpaint_canvas,
                             plan_edit, slerp)
from diffuse.errors import RequestError
from diffuse.samplers import SAMPLERS, SeededNoise, get_sampler
from diffuse.schedules import karras_sigmas


def _inpaint(finite, init, mask, name, seeds, steps=60):
    """Inpainting as the pipeline runs it: the edit plan's start, wrapper and composite."""
    noise = SeededNoise(seeds, init.shape[1:])
    plan = EditPlan(karras_sigmas(steps), init, mask)  # strength 1: the whole schedule, from pure noise
    x = get_sampler(name)(plan.denoiser(finite, noise), plan.start(noise()), plan.sigmas, noise=noise)
    return plan.finish(x)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_inpainting_half_of_a_training_image_recovers_it(finite, name):
    """The known half identifies the training image, so the ideal fill is its other half. The
    replacement method approximates that posterior: 92-95% of seeds recover it here (re-using
    the starting noise instead of fresh noise: 77-86%; see benchmarks/inpaint_methods.py)."""
    target = finite.points[3:4].expand(32, -1, -1, -1)
    mask = torch.zeros_like(target)
    mask[..., 2:] = 1  # repaint the right half
    init = torch.where(mask > 0, torch.zeros_like(target), target)  # the right half is lost
    out = _inpaint(finite, init, mask, name, list(range(32)))
    recovered = (out - target).abs().flatten(1).max(1).values < 1e-2
    assert recovered.float().mean() >= 0.85
    assert torch.equal(out[mask == 0], init[mask == 0])  # known region unchanged to the last bit


def test_known_region_is_bit_exact_even_where_the_fill_is_free(finite):
    init = torch.rand(2, 3, 4, 4) * 2 - 1  # not a training image: the fill must compromise
    mask = torch.zeros_like(init)
    mask[:, :, :2] = 1
    out = _inpaint(finite, init, mask, "euler_ancestral", [5, 6], steps=10)
    assert torch.equal(out[mask == 0], init[mask == 0])


def test_all_zero_mask_returns_the_input_exactly(finite):
    init = torch.rand(2, 3, 4, 4) * 2 - 1
    assert torch.equal(_inpaint(finite, init, torch.zeros_like(init), "heun", [0, 1], steps=5), init)


def _recovery_rate(denoiser, target, mask, name, steps):
    """Share of fills within 0.05 of the training image the known region identifies."""
    init = torch.where(mask > 0, torch.zeros_like(target), target)
    out = _inpaint(denoiser, init, mask, name, list(range(len(target))), steps=steps)
    return ((out - target).abs().flatten(1).max(1).values < 0.05).float().mean().item()


def test_inpainting_defaults_to_the_sampler_that_measures_best():
    """benchmarks/inpaint_methods.py ranks the samplers under the inpainting wrapper: here, in
    small, the default (at the default steps) must be the best one-evaluation-per-step sampler."""
    from conftest import FiniteDenoiser
    g = torch.Generator().manual_seed(0)
    points = torch.rand(32, 3, 8, 8, generator=g) * 2 - 1
    target = points[torch.randint(0, 32, (128,), generator=g)]
    mask = torch.zeros_like(target)
    mask[..., 4:] = 1
    photo, hole = Image.new("RGB", (8, 8)), Image.new("L", (8, 8), 255)
    request = GenerateRequest("x", init_image=photo, mask=hole)
    rates = {name: _recovery_rate(FiniteDenoiser(points), target, mask, name, request.steps)
             for name in SAMPLERS if name not in ("heun", "consistency")}  # consistency: for consistency models only
    assert rates[request.sampler] >= max(rates.values()) - 0.01, rates
    assert GenerateRequest("x").sampler == "dpmpp_2m"  # text-to-image keeps its own measured default
    assert GenerateRequest("x", init_image=photo).sampler == "dpmpp_2m"
    assert GenerateRequest("x", init_image=photo, mask=hole, sampler="heun").sampler == "heun"


class Recorder:
    """A denoiser that keeps what it was given."""

    def __call__(self, x, sigma, cond=None):
        self.x = x
        return torch.zeros_like(x)


@pytest.mark.parametrize("m", [0.5, 0.25, 0.9])
def test_a_soft_mask_edge_is_noised_to_the_full_sigma(m):
    """Where the mask blends the sample and the re-noised known image, the denoiser must still
    see noise of std sigma (as it was trained), not sigma sqrt(m^2 + (1-m)^2) (0.71 sigma at 0.5)."""
    sigma, n = 2.0, 200_000
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, 1, 1, generator=g) * sigma  # a sample at sigma, around an init of 0
    recorder = Recorder()
    InpaintDenoiser(recorder, torch.zeros_like(x), torch.full_like(x, m),
                    lambda: torch.randn(x.shape, generator=g))(x, torch.full((n,), sigma))
    assert recorder.x.std().item() == pytest.approx(sigma, rel=0.01)
    assert recorder.x.mean().item() == pytest.approx(0, abs=0.02)


def test_img2img_slices_the_schedule():
    sig = karras_sigmas(20)
    assert torch.equal(img2img_sigmas(sig, 1.0), sig)
    assert len(img2img_sigmas(sig, 0.5)) - 1 == 10 and img2img_sigmas(sig, 0.5)[-1] == 0
    assert torch.equal(img2img_sigmas(sig, 0.0), sig[-1:])
    with pytest.raises(RequestError, match="strength"):
        img2img_sigmas(sig, 1.5)


def test_img2img_from_near_a_training_image_lands_on_it(finite):
    init = finite.points[2:3] + 0.05 * torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    sig = img2img_sigmas(karras_sigmas(40), 0.5)
    x = noised_start(init, sig, torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(1)))
    out = SAMPLERS["dpmpp_2m"](finite, x, sig)
    assert (out - finite.points[2:3]).abs().max() < 1e-2


def test_edit_plan_of_an_image_and_a_mask(photo):
    sig = karras_sigmas(10)
    txt = plan_edit(sig, 2, 32, 32)
    assert txt.runs and torch.equal(txt.sigmas, sig) and txt.init is None
    assert torch.equal(txt.start(torch.ones(2, 3, 32, 32)), torch.full((2, 3, 32, 32), 80.0))
    half = plan_edit(sig, 2, 16, 16, photo, strength=0.5)  # resized to the output, the tail of 5 steps
    assert half.init.shape == (2, 3, 16, 16) and len(half.sigmas) == 6 and half.mask is None
    assert torch.allclose(half.start(torch.zeros(2, 3, 16, 16)), half.init)
    assert not plan_edit(sig, 1, 32, 32, photo, strength=0.0).runs  # strength 0: no step
    soft = Image.new("L", photo.size, 0)
    soft.putpixel((3, 4), 255)
    inpaint = plan_edit(sig, 2, 32, 32, photo, soft)
    assert inpaint.mask.shape == (2, 3, 32, 32) and inpaint.mask.sum() == 6 and inpaint.runs
    x = torch.full((2, 3, 32, 32), 5.0)
    assert torch.equal(inpaint.finish(x)[inpaint.mask == 0], inpaint.init[inpaint.mask == 0])
    with pytest.warns(UserWarning, match="empty"):
        assert not plan_edit(sig, 1, 32, 32, photo, Image.new("L", photo.size, 0)).runs


def test_slerp_ends_and_norm():
    a, b = torch.randn(3, 3, 8, 8), torch.randn(3, 3, 8, 8)
    assert torch.equal(slerp(a, b, 0.0), a) and torch.allclose(slerp(a, b, 1.0), b, atol=1e-5)
    mid = slerp(a, b, 0.5)
    assert torch.allclose(mid.flatten(1).norm(dim=1), a.flatten(1).norm(dim=1), rtol=0.1)


def test_masks_of_any_mode():
    l_mask = Image.new("L", (4, 4), 0)
    l_mask.putpixel((1, 1), 255)
    assert mask_tensor(l_mask, (4, 4))[0, 1, 1] == 1 and mask_tensor(l_mask, (4, 4)).sum() == 1
    assert mask_tensor(Image.new("RGB", (4, 4), (128, 128, 128)), (4, 4)).mean().item() == pytest.approx(128 / 255)
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 255))
    rgba.putpixel((0, 0), (0, 0, 0, 0))  # transparent = repaint
    assert mask_tensor(rgba, (4, 4))[0, 0, 0] == 1 and mask_tensor(rgba, (4, 4)).sum() == 1
    assert mask_tensor(Image.new("1", (4, 4), 1), (4, 4)).min() == 1
    with pytest.raises(RequestError, match="mask is 8x4 but the image is 4x4"):
        mask_tensor(Image.new("L", (8, 4)), (4, 4))


def test_outpaint_canvas():
    img = Image.new("RGB", (4, 4), (10, 20, 30))
    canvas, mask = outpaint_canvas(img, 2, 0, 0, 4)
    assert canvas.size == (6, 8) and mask.size == (6, 8)
    assert canvas.crop((2, 0, 6, 4)).tobytes() == img.tobytes()
    assert mask.getpixel((0, 0)) == 255 and mask.getpixel((3, 2)) == 0 and mask.getpixel((3, 6)) == 255
    with pytest.raises(RequestError, match="padding"):
        outpaint_canvas(img, 0, 0, 0, 0)


# ----------------------------------------------------------------------------- through the pipeline

@pytest.fixture(scope="module")
def pipe(tiny_model_dir):
    return Pipeline.load(tiny_model_dir)


@pytest.fixture(scope="module")
def photo(pipe):
    return pipe("a red circle", seed=0, steps=4)[0]


def test_strength_zero_returns_the_input_and_one_equals_text_to_image(pipe, photo):
    out = pipe("a blue square", seed=3, steps=6, init_image=photo, strength=0.0)[0]
    assert out.tobytes() == photo.tobytes() and json.loads(out.info["diffuse"])["steps_run"] == 0
    base = GenerateRequest("a blue square", seed=3, steps=6)
    full = GenerateRequest("a blue square", seed=3, steps=6, init_image=photo, strength=1.0)
    assert torch.equal(pipe.sample(base), pipe.sample(full))
    half = pipe("a blue square", seed=3, steps=6, init_image=photo, strength=0.5)[0]
    assert json.loads(half.info["diffuse"])["steps_run"] == 3


@pytest.mark.parametrize("sampler", [s for s in SAMPLERS if s != "consistency"])  # the consistency sampler: consistency models only (test_distill)
def test_inpainting_keeps_the_known_region_with_every_sampler(pipe, photo, sampler):
    mask = Image.new("L", photo.size, 0)
    mask.paste(255, (8, 8, 24, 24))
    out = pipe("a green star", seed=1, steps=4, sampler=sampler, init_image=photo, mask=mask, n=2)
    known = pil_to_tensor(mask.convert("RGB")) < 0
    for img in out:
        assert torch.equal(pil_to_tensor(img)[known], pil_to_tensor(photo)[known])
    meta = json.loads(out[0].info["diffuse"])
    assert meta["mode"] == "inpaint" and len(meta["mask_sha256"]) == 64 and len(meta["init_image_sha256"]) == 64


def test_empty_mask_returns_input_full_mask_repaints(pipe, photo):
    with pytest.warns(UserWarning, match="empty"):
        out = pipe("a square", seed=1, steps=3, init_image=photo, mask=Image.new("L", photo.size, 0))[0]
    assert out.tobytes() == photo.tobytes()
    # Exactly text-to-image with a deterministic sampler (a stochastic one shares the image's
    # generator with the known region's noise, so its draws come in another order).
    full = pipe.sample(GenerateRequest("a square", seed=1, steps=3, init_image=photo, mask=Image.new("L", photo.size, 255),
                                       sampler="dpmpp_2m"))
    assert torch.allclose(full, pipe.sample(GenerateRequest("a square", seed=1, steps=3, sampler="dpmpp_2m")), atol=1e-5)


def test_outpainting_keeps_the_original_pixels(pipe, photo):
    canvas, mask = outpaint_canvas(photo, 16, 0, 0, 0)
    out = pipe("a red circle", seed=2, steps=4, init_image=canvas, mask=mask)[0]
    assert out.size == (48, 32) and out.crop((16, 0, 48, 32)).tobytes() == photo.tobytes()


def test_seed_variations(pipe):
    base = GenerateRequest("a star", seed=4, steps=5, sampler="euler")
    other = GenerateRequest("a star", seed=9, steps=5, sampler="euler")
    v0 = GenerateRequest("a star", seed=4, steps=5, sampler="euler", variation_seed=9, variation_strength=0.0)
    v1 = GenerateRequest("a star", seed=4, steps=5, sampler="euler", variation_seed=9, variation_strength=1.0)
    vh = GenerateRequest("a star", seed=4, steps=5, sampler="euler", variation_seed=9, variation_strength=0.3)
    assert torch.equal(pipe.sample(v0), pipe.sample(base))
    assert torch.allclose(pipe.sample(v1), pipe.sample(other), atol=1e-4)
    d_base, d_other = (pipe.sample(vh) - pipe.sample(base)).abs().mean(), (pipe.sample(vh) - pipe.sample(other)).abs().mean()
    assert 0 < d_base < d_other  # near the seed's image, not the variation seed's


@pytest.mark.parametrize("kw,message", [
    ({"strength": 1.5}, "strength"), ({"strength": -0.1}, "strength"),
    ({"mask": Image.new("L", (8, 8))}, "mask is 8x8 but the image is 32x32"),
    ({"width": 33}, "width 33"),
])
def test_bad_edit_requests(pipe, photo, kw, message):
    with pytest.raises(RequestError, match=message):
        pipe.sample(GenerateRequest("x", seed=0, steps=2, init_image=photo, **kw))


def test_mask_without_image_and_image_of_impossible_size(pipe):
    with pytest.raises(RequestError, match="needs an init image"):
        GenerateRequest("x", mask=Image.new("L", (32, 32)))
    with pytest.raises(RequestError, match="width 33"):
        pipe.sample(GenerateRequest("x", seed=0, steps=2, init_image=Image.new("RGB", (33, 32))))
