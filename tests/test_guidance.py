import pytest
import torch

from diffuse.errors import RequestError
from diffuse.guidance import CFGDenoiser


class CondShift:
    """D(x | c) = x/2 + c: the guided result is known exactly."""

    def __init__(self):
        self.calls = []

    def __call__(self, x, sigma, cond):
        self.calls.append(x.shape[0])
        return x / 2 + cond.reshape(-1, 1)


def test_cfg_is_lerp_between_uncond_and_cond():
    den = CondShift()
    x, sigma = torch.zeros(2, 3), torch.ones(2)
    cond, neg = torch.tensor([1.0, 2.0]), torch.tensor([0.5, 0.0])
    out = CFGDenoiser(den, neg, 3.0)(x, sigma, cond)
    assert torch.allclose(out, (neg + 3.0 * (cond - neg)).reshape(-1, 1).expand(2, 3))
    assert den.calls == [4]  # one batched pass for both predictions


def test_scale_one_skips_unconditional_pass_and_zero_is_unconditional():
    den = CondShift()
    x, sigma, cond, neg = torch.zeros(2, 3), torch.ones(2), torch.ones(2), torch.zeros(2)
    assert torch.allclose(CFGDenoiser(den, neg, 1.0)(x, sigma, cond), torch.ones(2, 3))
    assert den.calls == [2]
    assert torch.allclose(CFGDenoiser(den, neg, 0.0)(x, sigma, cond), torch.zeros(2, 3))


@pytest.mark.parametrize("bad", [-0.5, float("nan")])
def test_negative_guidance_is_rejected(bad):
    with pytest.raises(RequestError, match="guidance"):
        CFGDenoiser(CondShift(), None, bad)
