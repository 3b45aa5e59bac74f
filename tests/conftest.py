"""Shared fixtures: closed-form ideal denoisers, a tiny trained model, a live HTTP server.

For data with a known distribution the ideal denoiser E[y | x = y + sigma n] is known exactly
(EDM appendix B.3), so samplers can be tested against the truth with no training at all.
"""

import contextlib
import socket
import threading
import time

import pytest
import torch

from diffuse.pipeline import Pipeline
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


# The parameters of a generated image as Pipeline.metadata() records them (for tests of what
# carries them: content credentials, the export step).
MADE_PARAMS = {"prompt": "a red circle", "mode": "txt2img", "model": "shapes", "model_hash": "ab" * 6,
               "model_sha256": "ab" * 32, "seed": 5, "steps": 2}


def made_image():
    """A 32x32 picture that records MADE_PARAMS, as a generated one does."""
    import json
    from PIL import Image
    img = Image.new("RGB", (32, 32), (200, 30, 30))
    img.info.update({"diffuse": json.dumps(MADE_PARAMS), "parameters": "a red circle\nSteps: 2, Seed: 5, Model: shapes"})
    return img


@pytest.fixture(autouse=True)
def config_dir(tmp_path_factory, monkeypatch):
    """A config folder of the session's own, so no test makes or reads a signing key in the real
    ~/.config/diffuse; the one local key is made once and shared, as a user's is. No test signs
    with a key from the environment unless it sets one."""
    folder = tmp_path_factory.getbasetemp() / "config"
    monkeypatch.setenv("DIFFUSE_CONFIG", str(folder))
    for name in ("DIFFUSE_C2PA_CERT", "DIFFUSE_C2PA_KEY"):
        monkeypatch.delenv(name, raising=False)
    return folder


@pytest.fixture
def gaussian():
    return GaussianDenoiser(0.5)


@pytest.fixture
def finite():
    g = torch.Generator().manual_seed(0)
    return FiniteDenoiser(torch.rand(5, 3, 4, 4, generator=g) * 2 - 1)


def tiny_config(out, **kw) -> TrainConfig:
    # fp32: tests compare runs to 1e-6, which bf16 autocast (`auto` on an AVX-512 BF16 CPU) does not keep
    base = dict(data="shapes", out=str(out), preset="tiny", steps=40, batch_size=8, data_size=256,
                preview_every=0, checkpoint_every=0, progress=False, lr=2e-3, warmup_steps=5, precision="fp32")
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny") / "run"
    Trainer(tiny_config(out)).run()
    return out


@contextlib.contextmanager
def live_server(app):
    """Run an ASGI app under uvicorn on a free loopback port in a background thread; yields its URL.
    The socket is bound before the thread starts, so the port can never be taken in between."""
    import uvicorn
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


class HeldPipeline(Pipeline):
    """A loaded Pipeline whose jobs wait at every sampler step while `gate` is clear, then sleep
    `delay` s: tests of queueing, cancellation and live previews hold a job as long as they need."""

    def __init__(self, pipe: Pipeline, delay: float = 0.0, name: str | None = None):
        super().__init__(pipe.model, pipe.model_hash, name or pipe.name, pipe.config)
        self.gate, self.delay = threading.Event(), delay
        self.gate.set()

    def generate(self, request, callback=None):
        def held(step):
            callback(step)  # the server's callback: raises here once the job is cancelled
            assert self.gate.wait(timeout=60), "a test left the gate closed"
            time.sleep(self.delay)
        return super().generate(request, held)


def installed_styles() -> list[str]:
    """The emoji styles whose source (package or font) is installed here."""
    from diffuse import emoji
    from diffuse.errors import DataError
    found = []
    for name in emoji.STYLES:
        try:
            emoji.STYLE_CLASSES[name]()
            found.append(name)
        except DataError:
            pass
    return found
