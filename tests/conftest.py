"""Shared fixtures: closed-form ideal denoisers and a tiny trained model.

For data with a known distribution the ideal denoiser E[y | x = y + sigma n] is known exactly
(EDM appendix B.3), so samplers can be tested against the truth with no training at all.
"""

import pytest
import torch

from diffuse.training import TrainConfig, Trainer


class GaussianDenoiser:
    """Data y ~ N(0, s^2 I): D(x, sigma) = s^2 / (s^2 + sigma^2) x. The PF-ODE then has the exact
    solution x(sigma) = x(sigma_max) sqrt(s^2 + sigma^2) / sqrt(s^2 + sigma_max^2)."""

    def __init__(self, s: float = 0.5):
        self.s = s

    def __call__(self, x, sigma, cond=None):
        s2 = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, *[1] * (x.ndim - 1)) ** 2
        return self.s ** 2 / (self.s ** 2 + s2) * x

    def exact(self, x_start, sigma_start, sigma_end=0.0):
        return x_start * ((self.s ** 2 + sigma_end ** 2) / (self.s ** 2 + sigma_start ** 2)) ** 0.5


class FiniteDenoiser:
    """Data uniform over K points y_k: D(x, sigma) = sum_k softmax_k(-|x - y_k|^2 / (2 sigma^2)) y_k."""

    def __init__(self, points: torch.Tensor):
        self.points = points  # [K, ...]

    def __call__(self, x, sigma, cond=None):
        sigma = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1)
        if sigma.numel() == 1:
            sigma = sigma.expand(x.shape[0])
        d2 = ((x[:, None].double() - self.points[None].double()) ** 2).flatten(2).sum(-1)  # [B, K]
        w = torch.softmax(-d2 / (2 * sigma[:, None] ** 2), dim=1)
        return torch.einsum("bk,k...->b...", w, self.points.double()).to(x.dtype)

    def nearest_distance(self, x):
        return ((x[:, None] - self.points[None]) ** 2).flatten(2).sum(-1).min(1).values.sqrt()


@pytest.fixture
def gaussian():
    return GaussianDenoiser(0.5)


@pytest.fixture
def finite():
    g = torch.Generator().manual_seed(0)
    return FiniteDenoiser(torch.rand(5, 3, 4, 4, generator=g) * 2 - 1)


def tiny_config(out, **kw) -> TrainConfig:
    base = dict(data="shapes", out=str(out), preset="tiny", steps=40, batch_size=8, data_size=256,
                preview_every=0, checkpoint_every=0, progress=False, lr=2e-3, warmup_steps=5)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny") / "run"
    Trainer(tiny_config(out)).run()
    return out
