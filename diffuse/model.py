"""The text-to-image model: text encoder + UNet + preconditioning, described by one config dict.

`TextToImageModel` is a denoiser D(x, sigma, cond) -> x0 (see denoiser.py) that also knows how
to turn prompts into the `cond` it takes. Its `config()` is what a checkpoint's config.json
stores, and `from_config` rebuilds it, so a checkpoint describes itself (as nanoGPT's do).
"""

import torch
from torch import nn

from .denoiser import Denoiser
from .networks import UNet, UNetConfig
from .text_encoder import Conditioning, TextEncoder, TextEncoderConfig, WordTokenizer


class TextToImageModel(nn.Module):
    def __init__(self, unet_cfg: UNetConfig, text_cfg: TextEncoderConfig, tokenizer: WordTokenizer,
                 parameterization: str = "edm", sigma_data: float = 0.5):
        super().__init__()
        self.tokenizer = tokenizer
        self.text_encoder = TextEncoder(text_cfg)
        self.denoiser = Denoiser(UNet(unet_cfg), parameterization, sigma_data)

    @property
    def unet_cfg(self) -> UNetConfig:
        return self.denoiser.net.cfg

    @property
    def image_size(self) -> int:
        return self.unet_cfg.image_size

    def encode(self, prompts: list[str]) -> Conditioning:
        ids, mask = self.tokenizer.encode(prompts)
        device = next(self.parameters()).device
        return self.text_encoder(ids.to(device), mask.to(device))

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, cond: Conditioning | None = None) -> torch.Tensor:
        return self.denoiser(x, sigma, cond)

    def config(self) -> dict:
        return {"unet": self.unet_cfg.to_dict(), "text_encoder": self.text_encoder.cfg.to_dict(),
                "tokenizer": self.tokenizer.to_config(),
                "denoiser": {"parameterization": self.denoiser.parameterization,
                             "sigma_data": self.denoiser.sigma_data}}

    @classmethod
    def from_config(cls, cfg: dict) -> "TextToImageModel":
        return cls(UNetConfig.from_dict(cfg["unet"]), TextEncoderConfig(**cfg["text_encoder"]),
                   WordTokenizer.from_config(cfg["tokenizer"]), **cfg["denoiser"])

    @classmethod
    def create(cls, unet_cfg: UNetConfig, captions: list[str], text_layers: int = 2,
               max_length: int = 32) -> "TextToImageModel":
        """A fresh model whose vocabulary is built from the training captions."""
        tok = WordTokenizer.build(captions, max_length=max_length)
        text_cfg = TextEncoderConfig(vocab_size=len(tok), max_length=max_length, width=unet_cfg.text_width,
                                     layers=text_layers, heads=max(1, unet_cfg.text_width // 32))
        return cls(unet_cfg, text_cfg, tok)
