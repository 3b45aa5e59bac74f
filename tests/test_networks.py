import pytest
import torch

from diffuse.errors import DiffuseError
from diffuse.model import TextToImageModel
from diffuse.networks import PRESETS, preset


@pytest.mark.parametrize("size", [32, 64])
def test_unet_keeps_shape_at_both_sizes_and_other_multiples(size):
    model = TextToImageModel.create(preset("tiny", size), ["a red circle"])
    assert model.unet_cfg.stride == (2 if size == 32 else 4)
    cond = model.encode(["a red circle", ""])
    for h, w in ((size, size), (size // 2, size + 2 * model.unet_cfg.stride)):
        x = torch.randn(2, 3, h, w)
        assert model(x, torch.tensor([0.5, 3.0]), cond).shape == x.shape


def test_fresh_unet_outputs_zero_so_the_denoiser_starts_at_c_skip_x():
    model = TextToImageModel.create(preset("tiny"), ["a red circle"])
    x, sigma = torch.randn(2, 3, 32, 32), torch.tensor([0.3, 2.0])
    c_skip = 0.25 / (sigma ** 2 + 0.25)
    assert torch.allclose(model(x, sigma, model.encode(["a", "b"])), c_skip.reshape(-1, 1, 1, 1) * x)


def test_text_reaches_the_output_through_cross_attention():
    torch.manual_seed(0)
    model = TextToImageModel.create(preset("tiny"), ["a red circle", "a blue square"])
    for p in model.parameters():  # move every weight off its zero initialisation
        p.data.add_(torch.randn_like(p) * 0.05)
    x, sigma = torch.randn(1, 3, 32, 32), torch.tensor([1.0])
    a, b = model(x, sigma, model.encode(["a red circle"])), model(x, sigma, model.encode(["a blue square"]))
    assert (a - b).abs().max() > 1e-3


def test_presets_are_listed_and_unknown_is_an_error():
    assert {"tiny", "small", "medium", "large"} <= set(PRESETS)
    with pytest.raises(DiffuseError, match="unknown preset"):
        preset("huge")


def test_patching_folds_pixels_into_channels_and_back():
    from dataclasses import replace
    cfg = replace(preset("tiny"), patch_size=2, attn_resolutions=(8,))
    model = TextToImageModel.create(cfg, ["a red circle"])
    assert cfg.stride == 4
    x = torch.randn(2, 3, 32, 32)
    assert model(x, torch.tensor([0.5, 3.0]), model.encode(["a", "b"])).shape == x.shape


def test_coordinate_channels_give_each_pixel_its_position():
    from diffuse.networks import coordinate_channels
    grid = coordinate_channels(torch.zeros(2, 3, 4, 8))
    assert grid.shape == (2, 2, 4, 8)
    assert grid[0, :, 0, 0].tolist() == [-1.0, -1.0]       # top left: x = -1, y = -1
    assert grid[1, :, 0, -1].tolist() == [1.0, -1.0]       # top right: x runs along the width
    assert grid[0, :, -1, 0].tolist() == [-1.0, 1.0]       # bottom left: y runs down the height


def test_coords_enter_the_first_convolution_as_two_more_channels():
    from dataclasses import replace
    torch.manual_seed(0)
    plain = TextToImageModel.create(preset("tiny"), ["a red circle"])
    for p in plain.parameters():
        p.data.add_(torch.randn_like(p) * 0.05)
    coords = TextToImageModel.create(replace(preset("tiny"), coords=True), ["a red circle"])
    w = coords.denoiser.net.conv_in.weight
    assert w.shape[1] == plain.denoiser.net.conv_in.weight.shape[1] + 2
    state = plain.state_dict()
    state["denoiser.net.conv_in.weight"] = torch.cat([state["denoiser.net.conv_in.weight"], torch.zeros_like(w[:, :2])], dim=1)
    coords.load_state_dict(state)
    x, sigma, cond = torch.randn(1, 3, 32, 32), torch.tensor([1.0]), plain.encode(["a red circle"])
    # with zero weights on the coordinates the two networks are the same function ...
    assert torch.allclose(coords(x, sigma, cond), plain(x, sigma, cond), atol=1e-6)
    # ... and the coordinates, once weighted, tell the network where each pixel is
    coords.denoiser.net.conv_in.weight.data[:, -2:] = torch.randn_like(w[:, :2]) * 0.05
    assert (coords(x, sigma, cond) - plain(x, sigma, cond)).abs().max() > 1e-3


def test_under_cpu_bf16_autocast_attention_and_group_norm_run_in_fp32():
    """They fall off the fast path in bf16 on the CPU (benchmarks/profile_step.py); convolutions do not."""
    from diffuse.networks import GroupNorm, attention
    x = torch.randn(2, 8, 4, 4)
    gn = GroupNorm(2, 8)
    q = k = v = torch.randn(2, 2, 5, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert gn(x).dtype == torch.float32 and attention(q, k, v).dtype == torch.float32
        assert torch.nn.functional.conv2d(x, torch.randn(3, 8, 1, 1)).dtype == torch.bfloat16
    assert torch.allclose(gn(x), torch.nn.functional.group_norm(x, 2, gn.weight, gn.bias))
    assert torch.allclose(attention(q, k, v), torch.nn.functional.scaled_dot_product_attention(q, k, v))


def test_a_bf16_training_step_on_the_cpu_lowers_the_loss(tmp_path):
    from conftest import tiny_config
    from diffuse.training import Trainer
    trainer = Trainer(tiny_config(tmp_path / "run", steps=30, precision="bf16", log_every=5))
    trainer.run()
    losses = [r["loss"] for r in map(__import__("json").loads, (tmp_path / "run" / "log.jsonl").read_text().splitlines())
              if "loss" in r and "event" not in r]
    assert losses[-1] < losses[0]
