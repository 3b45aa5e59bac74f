"""A pixel-space UNet with noise-level embedding, self-attention and cross-attention to text.

The layout follows DDPM / ADM (Ho et al. 2020; Dhariwal & Nichol 2021): residual blocks at each
resolution, stride-2 convolutions down and nearest upsampling up, skip connections between
mirrored blocks, and attention at the resolutions named in the config. The noise level enters as
a sinusoidal embedding of c_noise, with the pooled text vector added to it, and scales and shifts
every residual block (ADM's adaptive group norm).
"""

import math
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class UNetConfig:
    image_size: int = 32                          # training resolution (square)
    in_channels: int = 3                          # RGB
    channels: int = 64                            # width of the first level
    channel_mult: tuple[int, ...] = (1, 2, 2)     # width multiplier per level; level k is image_size / 2^k
    num_res_blocks: int = 2                       # residual blocks per level (down path)
    attn_resolutions: tuple[int, ...] = (16, 8)   # resolutions with self- and cross-attention
    head_channels: int = 32                       # channels per attention head
    text_width: int = 128                         # width of the text encoder's tokens
    dropout: float = 0.0                          # dropout inside residual blocks
    patch_size: int = 1                           # pixels folded into channels before the first level
    coords: bool = False                          # two input channels holding each pixel's (x, y) in [-1, 1]
    guidance_input: bool = False                  # the guidance scale is an input (a distilled student)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "UNetConfig":
        d = dict(d)
        for k in ("channel_mult", "attn_resolutions"):
            d[k] = tuple(d[k])
        return cls(**d)

    @property
    def stride(self) -> int:
        """Image sides must be multiples of this."""
        return self.patch_size * 2 ** (len(self.channel_mult) - 1)


# Size presets, one line each (EDM2 style). Measured on 2 CPU cores: see benchmarks/RESULTS.md.
PRESETS: dict[str, dict] = {
    "tiny":   dict(channels=16, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(16,), text_width=32),
    "small":  dict(channels=32, channel_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(16, 8), text_width=64),
    "medium": dict(channels=64, channel_mult=(1, 2, 2), num_res_blocks=2, attn_resolutions=(16, 8), text_width=128),
    "large":  dict(channels=96, channel_mult=(1, 2, 2, 2), num_res_blocks=2, attn_resolutions=(16, 8), text_width=256),
}


def preset(name: str, image_size: int = 32) -> UNetConfig:
    from .errors import DiffuseError
    if name not in PRESETS:
        raise DiffuseError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
    cfg = UNetConfig(image_size=image_size, **PRESETS[name])
    if image_size == 64:  # one more level so the attention resolutions keep the same meaning
        cfg = replace(cfg, channel_mult=cfg.channel_mult + (cfg.channel_mult[-1],))
    return cfg


def cpu_bf16(x: torch.Tensor) -> bool:
    """Under bf16 autocast on the CPU, where attention and group norm are the ops that fall off
    the fast path: in bf16 their backward took 2.3x and 2.7x as long as in fp32, while the
    convolutions ran twice as fast (benchmarks/profile_step.py). They run in fp32 there."""
    return x.device.type == "cpu" and torch.is_autocast_enabled("cpu")


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """scaled_dot_product_attention, in fp32 under CPU bf16 autocast (see cpu_bf16)."""
    if cpu_bf16(q):
        with torch.autocast("cpu", enabled=False):
            return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


class GroupNorm(nn.GroupNorm):
    """nn.GroupNorm, in fp32 under CPU bf16 autocast (see cpu_bf16); the parameters are nn.GroupNorm's."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if cpu_bf16(x):
            with torch.autocast("cpu", enabled=False):
                return super().forward(x.float())
        return super().forward(x)


def norm(ch: int) -> nn.GroupNorm:
    return GroupNorm(min(32, ch // 4), ch)


def noise_embedding(c_noise: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding (Vaswani et al. 2017) of c_noise = ln(sigma) / 4, scaled so that the
    useful range of sigma (about -2..1.5 after scaling) spans many periods."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, device=c_noise.device) / half)
    args = (c_noise.float() * 250)[:, None] * freqs[None]  # 250 = 1000 / 4: DDPM's timestep range
    return torch.cat([args.cos(), args.sin()], dim=1)


def coordinate_channels(x: torch.Tensor) -> torch.Tensor:
    """[B, 2, H, W]: each pixel's x and y in [-1, 1] (CoordConv, Liu et al. 2018). Convolutions are
    translation-equivariant, so without these a small UNet knows where it is only from the zero
    padding at the borders, and words like "top left" have nothing to attach to."""
    b, _, h, w = x.shape
    ys = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype)
    xs = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"))
    return grid.expand(b, 2, h, w)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb_dim: int, dropout: float):
        super().__init__()
        self.norm1, self.conv1 = norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * cout)
        self.norm2, self.conv2 = norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity (ADM)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)
        h = F.silu(self.norm2(h) * (1 + scale) + shift)  # adaptive group norm (ADM, sec. 3)
        return self.skip(x) + self.conv2(self.dropout(h))


class AttnBlock(nn.Module):
    """Self-attention over pixels, then cross-attention from pixels to text tokens."""

    def __init__(self, ch: int, text_width: int, head_channels: int):
        super().__init__()
        self.heads = max(1, ch // head_channels)
        self.norm1, self.qkv, self.proj1 = norm(ch), nn.Conv2d(ch, 3 * ch, 1), nn.Conv2d(ch, ch, 1)
        self.norm2, self.q, self.proj2 = norm(ch), nn.Conv2d(ch, ch, 1), nn.Conv2d(ch, ch, 1)
        self.kv = nn.Linear(text_width, 2 * ch)
        for p in (self.proj1, self.proj2):
            nn.init.zeros_(p.weight)
            nn.init.zeros_(p.bias)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:  # [B, C, L] -> [B, heads, L, C/heads]
        b, c, n = t.shape
        return t.reshape(b, self.heads, c // self.heads, n).transpose(2, 3)

    def _merge(self, t: torch.Tensor, shape) -> torch.Tensor:
        return t.transpose(2, 3).reshape(shape)

    def forward(self, x: torch.Tensor, cond) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(b, 3 * c, h * w).chunk(3, dim=1)
        a = attention(self._heads(q), self._heads(k), self._heads(v))
        x = x + self.proj1(self._merge(a, x.shape))
        if cond is not None:
            q = self._heads(self.q(self.norm2(x)).reshape(b, c, h * w))
            k, v = self.kv(cond.tokens.to(x.dtype)).transpose(1, 2).chunk(2, dim=1)
            mask = cond.mask[:, None, None, :]
            a = attention(q, self._heads(k), self._heads(v), mask)
            x = x + self.proj2(self._merge(a, x.shape))
        return x


class Level(nn.Module):
    """One block of a UNet path: a residual block, optionally followed by attention."""

    def __init__(self, cin: int, cout: int, cfg: UNetConfig, emb_dim: int, attn: bool):
        super().__init__()
        self.res = ResBlock(cin, cout, emb_dim, cfg.dropout)
        self.attn = AttnBlock(cout, cfg.text_width, cfg.head_channels) if attn else None

    def forward(self, x, emb, cond):
        x = self.res(x, emb)
        return self.attn(x, cond) if self.attn is not None else x


class UNet(nn.Module):
    """F(x_in, c_noise, cond) -> output of the same shape as x_in (see denoiser.py)."""

    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.cfg = cfg
        ch, emb_dim = cfg.channels, 4 * cfg.channels
        self.emb = nn.Sequential(nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.text_emb = nn.Linear(cfg.text_width, emb_dim)
        if cfg.guidance_input:  # Meng et al. 2023: the scale w embedded like the noise level, added to it;
            self.guidance_emb = nn.Linear(ch, emb_dim)  # zero at first, so a student starts as its teacher's
            nn.init.zeros_(self.guidance_emb.weight)    # conditional model
            nn.init.zeros_(self.guidance_emb.bias)
        # Patching (Hoogeboom et al. 2023, "simple diffusion", sec. 3.3): fold p x p pixels into
        # channels so the first level runs at 1/p the resolution, p^2 times cheaper.
        p2 = cfg.patch_size ** 2
        self.conv_in = nn.Conv2d(cfg.in_channels * p2 + 2 * cfg.coords, ch, 3, padding=1)

        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        skips, cur, res = [ch], ch, cfg.image_size // cfg.patch_size
        for lvl, mult in enumerate(cfg.channel_mult):
            blocks = nn.ModuleList()
            for _ in range(cfg.num_res_blocks):
                blocks.append(Level(cur, ch * mult, cfg, emb_dim, res in cfg.attn_resolutions))
                cur = ch * mult
                skips.append(cur)
            self.down.append(blocks)
            last = lvl == len(cfg.channel_mult) - 1
            self.downsample.append(nn.Identity() if last else nn.Conv2d(cur, cur, 3, stride=2, padding=1))
            if not last:
                skips.append(cur)
                res //= 2

        self.mid = nn.ModuleList([Level(cur, cur, cfg, emb_dim, True), Level(cur, cur, cfg, emb_dim, False)])

        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for lvl, mult in reversed(list(enumerate(cfg.channel_mult))):
            blocks = nn.ModuleList()
            for _ in range(cfg.num_res_blocks + 1):
                blocks.append(Level(cur + skips.pop(), ch * mult, cfg, emb_dim, res in cfg.attn_resolutions))
                cur = ch * mult
            self.up.append(blocks)
            self.upsample.append(nn.Conv2d(cur, cur, 3, padding=1) if lvl > 0 else nn.Identity())
            if lvl > 0:
                res *= 2

        self.norm_out, self.conv_out = norm(cur), nn.Conv2d(cur, cfg.in_channels * p2, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, cond=None) -> torch.Tensor:
        emb = self.emb(noise_embedding(c_noise, self.cfg.channels).to(x.dtype))
        if cond is not None:
            emb = emb + self.text_emb(cond.pooled.to(x.dtype))
        if self.cfg.guidance_input:
            if cond is None or cond.guidance is None:
                raise ValueError("this network takes the guidance scale as input: give it in cond.guidance")
            # w / 8 through the noise-level embedding: w in [0, 8] spans its lowest frequencies' useful range.
            emb = emb + self.guidance_emb(noise_embedding(cond.guidance.reshape(-1) / 8, self.cfg.channels).to(x.dtype))
        emb = F.silu(emb)
        h = F.pixel_unshuffle(x, self.cfg.patch_size)
        if self.cfg.coords:
            h = torch.cat([h, coordinate_channels(h)], dim=1)
        h = self.conv_in(h)
        skips = [h]
        for blocks, down in zip(self.down, self.downsample):
            for block in blocks:
                h = block(h, emb, cond)
                skips.append(h)
            if not isinstance(down, nn.Identity):
                h = down(h)
                skips.append(h)
        for block in self.mid:
            h = block(h, emb, cond)
        for blocks, up in zip(self.up, self.upsample):
            for block in blocks:
                h = block(torch.cat([h, skips.pop()], dim=1), emb, cond)
            if not isinstance(up, nn.Identity):
                h = up(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return F.pixel_shuffle(self.conv_out(F.silu(self.norm_out(h))), self.cfg.patch_size)
