"""A watermark in the start noise, read back by inverting the sampler.

Images of 32 and 64 pixels have too few pixels for a mark added to them to survive JPEG or
rescaling (invisible-watermark refuses images under 256 px; RESULTS, "Watermark"). A diffusion
model's image, though, is a function of its start noise, and the noise has room: this marks the
noise, in the way of Gaussian Shading (Yang et al. 2024) and Tree-Ring (Wen et al. 2023), and
reads the mark by running the probability-flow ODE backwards from the image to the noise.

The mark. The start noise z ~ N(0, I) of a W x H image is cut into a GRID x GRID grid of blocks per
channel; each block's mean has a sign, 3 x 8 x 8 = 192 signs in all. They are set to a codeword:
a 32-bit payload (the first 32 bits of the model's weights hash), each bit repeated 6 times over
the grid, XOR a key stream from SHA-256 of the key and a nonce, so the signs look random. A block
whose sign is wrong has its mean reflected through zero (z_block - 2 mean), which leaves the
block's residual alone; since a Gaussian block mean is symmetric and independent of the
residual, the marked noise is exactly N(0, I) when the codeword is random (Gaussian Shading's
"performance-lossless" property). One fixed codeword would give every image the same signs, and
so the same slight lean in its layout; the nonce, the image's seed mod 256, gives 256 codewords
that images take in turn, and the reader tries them all (a 256-fold multiple test, counted in
its p-value).

Reading. The image is taken back to noise with Heun steps of the PF-ODE dx/dsigma =
(x - D(x; sigma)) / sigma (Karras et al. 2022, eq. 3) from sigma_min up to sigma_max, with the
prompt and guidance the image records, or the empty prompt without guidance when it records
none; the signs of the recovered block means are compared with the codeword of each candidate
model. On an unmarked image each sign agrees by chance (p = 1/2), so the number that agree has
a binomial tail, times 256 for the nonces tried: the image is called marked when that chance is
below 1e-6, and the payload bits are read by majority over their 6 copies under the best nonce. Block means are low frequencies: what JPEG and
rescaling keep best, and what the sampler's first steps turn into the image's layout.

What it proves and does not: the key is public (anyone can read and, knowing it, forge or strip
the mark), so a found mark says "made by this model with diffuse's key", not who made it; a mark
not found says nothing. Image-to-image and inpainting start from the input image, so their mark
is weaker; the ancestral samplers add fresh noise at every step, which the ODE does not undo.
"""

from __future__ import annotations

import hashlib
import math

import torch
import torch.nn.functional as F

from .copies import binomial_tail
from .schedules import SIGMA_MAX, SIGMA_MIN

GRID = 8                # blocks per side, per channel
PAYLOAD_BITS = 32
DEFAULT_KEY = "diffuse start-noise watermark v1"
VERSION = "start-noise-v1"
DETECT_P = 1e-6         # the chance of that many agreeing signs on an unmarked image, below which it is marked
INVERT_STEPS = 50
NONCES = 256            # codewords, taken by seed mod NONCES


def signs_count(channels: int = 3) -> int:
    return channels * GRID * GRID


def key_stream(key: str, n: int) -> torch.Tensor:
    """n pseudo-random bits (bool) from SHA-256 of key and a counter."""
    out, counter = [], 0
    while len(out) < n:
        block = hashlib.sha256(f"{key}|{counter}".encode("utf-8")).digest()
        out += [(byte >> i) & 1 for byte in block for i in range(8)]
        counter += 1
    return torch.tensor(out[:n], dtype=torch.bool)


def payload_bits(model_hash: str) -> torch.Tensor:
    """The model's payload: the first 32 bits of its weights' SHA-256 (hex)."""
    value = int(model_hash[:PAYLOAD_BITS // 4], 16)
    return torch.tensor([(value >> (PAYLOAD_BITS - 1 - i)) & 1 for i in range(PAYLOAD_BITS)], dtype=torch.bool)


def bits_hex(bits: torch.Tensor) -> str:
    return f"{int(''.join('1' if b else '0' for b in bits.tolist()), 2):0{len(bits) // 4}x}"


def nonce_of(seed: int) -> int:
    return seed % NONCES


def codeword(model_hash: str, nonce: int, key: str = DEFAULT_KEY, channels: int = 3) -> torch.Tensor:
    """[channels, GRID, GRID] of +1/-1: sign j carries payload bit j mod 32, XOR the key stream
    of (key, nonce) (neighbouring blocks carry different bits, so a damaged region costs each bit
    few copies)."""
    n = signs_count(channels)
    bits = payload_bits(model_hash)[torch.arange(n) % PAYLOAD_BITS] ^ key_stream(f"{key}|{nonce}", n)
    return (bits.float() * 2 - 1).reshape(channels, GRID, GRID)


def block_means(z: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, C, GRID, GRID]: the mean of each block (adaptive pooling also takes
    sizes that GRID does not divide)."""
    return F.adaptive_avg_pool2d(z, GRID)


def mark_noise(z: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
    """z with each block mean's sign set to `code` by reflecting the wrong ones through zero."""
    h, w = z.shape[-2:]
    if h % GRID or w % GRID:
        raise ValueError(f"the start-noise watermark needs sizes divisible by {GRID}, got {w}x{h}")
    means = block_means(z)
    flip = (torch.sign(means) != code.to(z.device, z.dtype)).to(z.dtype) * means
    return z - 2 * F.interpolate(flip, size=(h, w), mode="nearest")


@torch.no_grad()
def invert(denoiser, image: torch.Tensor, cond=None, steps: int = INVERT_STEPS,
           sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX) -> torch.Tensor:
    """The start noise z (x at sigma_max = sigma_max z) that the PF-ODE maps to `image`: Heun's
    steps (Karras et al. 2022, algorithm 1, run upwards) from sigma_min to sigma_max, evenly
    spaced in log sigma; `steps` denoiser evaluations."""
    n = max(1, steps // 2)
    sigmas = torch.exp(torch.linspace(math.log(sigma_min), math.log(sigma_max), n + 1)).tolist()
    x = image.float()
    ones = torch.ones(len(x), device=x.device)

    def slope(x, s):
        return (x - denoiser(x, ones * s, cond)) / s

    for s, s_next in zip(sigmas[:-1], sigmas[1:]):
        d = slope(x, s)
        x_euler = x + (s_next - s) * d
        x = x + (s_next - s) * (d + slope(x_euler, s_next)) / 2
    return x / sigma_max


def agreement(z: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
    """[B]: how many block-mean signs of z agree with the codeword."""
    return (torch.sign(block_means(z)) == code.to(z.device)).flatten(1).sum(1)


def codebook(model_hash: str, key: str = DEFAULT_KEY, channels: int = 3) -> torch.Tensor:
    """[NONCES, channels, GRID, GRID]: every codeword of the model."""
    return torch.stack([codeword(model_hash, k, key, channels) for k in range(NONCES)])


def best_nonce(z: torch.Tensor, book: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image, the nonce whose codeword agrees with most block-mean signs, and that count."""
    signs = torch.sign(block_means(z)).flatten(1)                       # [B, n]
    agree = (signs[:, None] == book.flatten(1)[None].to(z.device)).sum(2)  # [B, NONCES]
    best = agree.max(1)
    return best.indices, best.values


def p_value(agree: int, n: int, tried: int = NONCES) -> float:
    """The chance that an unmarked image agrees this well with one of `tried` codewords."""
    return min(1.0, tried * chance_of(agree, n))


def chance_of(agree: int, n: int) -> float:
    """P(at least `agree` of n fair coin flips agree): the mark's false-positive chance."""
    return binomial_tail(agree, n, 0.5)


def decode_payload(z: torch.Tensor, nonce: int, key: str = DEFAULT_KEY) -> torch.Tensor:
    """[B, 32] bits: each payload bit by the sign of the sum of its copies' block means, the key
    stream of (key, nonce) undone."""
    means = block_means(z).flatten(1)  # [B, n]
    n = means.shape[1]
    stream = key_stream(f"{key}|{nonce}", n).to(z.device).float() * 2 - 1  # +1 where the key stream bit is 1
    votes = means * -stream  # sign j is + exactly when payload bit XOR key bit is 1: > 0 votes for a 1
    per_bit = torch.zeros(len(z), PAYLOAD_BITS, device=z.device).index_add_(1, torch.arange(n, device=z.device) % PAYLOAD_BITS, votes)
    return per_bit > 0


# ----------------------------------------------------------------------------- reading an image

def reading_size(pipe, image_size: tuple[int, int], params: dict | None) -> tuple[int, int]:
    """The size an image is read at: the one it records, else its own, rounded to a size the
    model makes whose grid GRID divides (a rescaled copy is read at its original size)."""
    if params and isinstance(params.get("width"), int) and isinstance(params.get("height"), int):
        return params["width"], params["height"]
    step = math.lcm(pipe.model.unet_cfg.stride, GRID)
    top = 4 * pipe.model.image_size
    return tuple(min(top, max(step, round(v / step) * step)) for v in image_size)


def reading_settings(pipe, params: dict | None) -> tuple[str, str, float, bool]:
    """(prompt, negative prompt, guidance, own): what an image is inverted with: the ones it
    records when it records them and names this model, else the empty prompt without guidance."""
    params = params or {}
    recorded = params.get("model_sha256") or params.get("model_hash") or ""
    own = bool(recorded) and isinstance(recorded, str) and pipe.model_hash.startswith(recorded) and \
        isinstance(params.get("prompt"), str) and isinstance(params.get("guidance", 1), (int, float))
    if own:
        return params["prompt"], params.get("negative_prompt") or "", float(params.get("guidance", 1)), True
    return "", "", 1.0, False


@torch.no_grad()
def read_mark(pipe, image, params: dict | None = None, key: str = DEFAULT_KEY, steps: int = INVERT_STEPS) -> dict:
    """Look for `pipe`'s start-noise mark in a PIL image: invert it to its start noise with the
    model (with the prompt, negative prompt and guidance the image records, when it records
    them and names this model), and compare the block-mean signs with the model's 256
    codewords."""
    return read_marks(pipe, [image], [params], key, steps)[0]


@torch.no_grad()
def read_marks(pipe, images: list, params: list[dict | None] | None = None, key: str = DEFAULT_KEY,
               steps: int = INVERT_STEPS) -> list[dict]:
    """read_mark of each image, the images that are read at the same size with the same negative
    prompt and guidance inverted together in one batch (each with its own prompt): the
    inversion's network passes are what reading costs, and a batch shares them."""
    from PIL import Image

    from .data import pil_to_tensor
    from .guidance import CFGDenoiser, GuidanceInput
    params = list(params) if params is not None else [None] * len(images)
    if len(params) != len(images):
        raise ValueError(f"{len(images)} images but {len(params)} parameter records")
    book = codebook(pipe.model_hash or "0" * 64, key)
    own_bits = payload_bits(pipe.model_hash or "0" * 64)
    n = signs_count()
    how = [reading_settings(pipe, p) for p in params]  # (prompt, negative, guidance, own) per image
    groups: dict[tuple, list[int]] = {}
    for i, (image, p) in enumerate(zip(images, params)):
        _, negative, guidance, _ = how[i]
        groups.setdefault((*reading_size(pipe, image.size, p), negative, guidance), []).append(i)
    out: list[dict | None] = [None] * len(images)
    model = pipe.model
    for (w, h, negative, guidance), idx in groups.items():
        tiles = []
        for i in idx:
            rgb = images[i].convert("RGB")
            tiles.append(pil_to_tensor(rgb if rgb.size == (w, h) else rgb.resize((w, h), Image.BICUBIC)))
        x = torch.stack(tiles).to(pipe.device)
        if getattr(pipe, "student", None):  # a distilled student takes the scale as input (its range holds 1 or more)
            lo, hi = pipe.student["guidance_range"]
            denoiser = GuidanceInput(model, min(max(guidance, lo), hi))
        else:
            denoiser = CFGDenoiser(model, model.encode([negative] * len(idx)), guidance)
        z = invert(denoiser, x, model.encode([how[i][0] for i in idx]), steps)
        nonces, agrees = best_nonce(z, book)
        for row, i in enumerate(idx):
            nonce, agree = int(nonces[row]), int(agrees[row])
            p = p_value(agree, n)
            bits = decode_payload(z[row:row + 1], nonce, key)[0]
            own = how[i][3]
            out[i] = {"found": p < DETECT_P, "version": VERSION, "model": pipe.name, "model_hash": pipe.model_hash[:12],
                      "agree": agree, "signs": n, "p_value": p, "nonce": nonce, "payload": bits_hex(bits),
                      "payload_bits_right": int((bits == own_bits).sum()),
                      "payload_is_model": bool((bits == own_bits).all()), "read_at": [w, h],
                      "inverted_with": f"its recorded prompt at guidance {guidance:g}" if own else "the empty prompt, no guidance"}
    return out


def best_reading(readings: list[dict]) -> dict | None:
    return min(readings, key=lambda r: r["p_value"]) if readings else None


def describe(r: dict) -> str:
    """One line for `diffuse inspect`."""
    if r["found"]:
        return (f"found: the start-noise mark of model {r['model']} ({r['agree']}/{r['signs']} signs agree, chance "
                f"{r['p_value']:.0e} on an unmarked image); payload {r['payload']}, {r['payload_bits_right']}/"
                f"{PAYLOAD_BITS} bits of the model's weights hash")
    return (f"not found ({r['agree']}/{r['signs']} signs agree with model {r['model']}'s mark at best, chance "
            f"{min(r['p_value'], 1):.2g}): made by another model, edited too much, or not made by diffuse")
