"""Text conditioning: an offline word tokenizer and a small transformer trained with the UNet.

No pretrained text model can be downloaded here, so the vocabulary is built from the training
captions and saved inside the checkpoint's config.json; a word never seen in training maps to
<unk>. Every sequence starts with <bos>, which is never masked, so an empty caption (the
unconditional input of classifier-free guidance) is a valid one-token sequence.
"""

import re
from collections import Counter
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .networks import attention

PAD, UNK, BOS = "<pad>", "<unk>", "<bos>"
_WORD = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")


def split_words(text: str) -> list[str]:
    """Lower-case words and single punctuation marks."""
    return _WORD.findall(text.lower())


class WordTokenizer:
    def __init__(self, vocab: list[str], max_length: int = 32):
        if vocab[:3] != [PAD, UNK, BOS]:
            raise ValueError("vocabulary must start with <pad>, <unk>, <bos>")
        self.vocab, self.max_length = list(vocab), max_length
        self.index = {w: i for i, w in enumerate(self.vocab)}

    @classmethod
    def build(cls, captions, max_words: int = 8192, max_length: int = 32) -> "WordTokenizer":
        """Vocabulary of the training captions, most frequent first (ties alphabetical, so the
        result depends only on the captions, not on their order)."""
        counts = Counter(w for c in captions for w in split_words(c))
        words = sorted(counts, key=lambda w: (-counts[w], w))[: max_words - 3]
        return cls([PAD, UNK, BOS] + words, max_length)

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids [B, max_length] and a mask that is True on real tokens."""
        ids = torch.zeros(len(texts), self.max_length, dtype=torch.long)
        for row, text in enumerate(texts):
            toks = [2] + [self.index.get(w, 1) for w in split_words(text)]
            toks = toks[: self.max_length]  # long captions are cut, as CLIP's tokenizer does
            ids[row, : len(toks)] = torch.tensor(toks)
        return ids, ids != 0

    def unknown_words(self, text: str) -> list[str]:
        return [w for w in split_words(text) if w not in self.index]

    def cut_words(self, text: str) -> list[str]:
        """The words (and marks) `encode` drops: <bos> takes one of max_length places."""
        return split_words(text)[self.max_length - 1:]

    def to_config(self) -> dict:
        return {"kind": "word", "max_length": self.max_length, "vocab": self.vocab}

    @classmethod
    def from_config(cls, cfg: dict) -> "WordTokenizer":
        return cls(cfg["vocab"], cfg["max_length"])


@dataclass(frozen=True)
class Conditioning:
    """Encoded text: per-token features for cross-attention and a pooled vector for the
    noise-level embedding."""

    tokens: torch.Tensor  # [B, T, width]
    mask: torch.Tensor    # [B, T], True where a real token is
    pooled: torch.Tensor  # [B, width]
    guidance: torch.Tensor | None = None  # [B]: the guidance scale, for a distilled student (distill.py)

    def cat(self, other: "Conditioning") -> "Conditioning":
        if (self.guidance is None) != (other.guidance is None):
            raise ValueError("cannot stack a conditioning with a guidance scale and one without")
        guidance = None if self.guidance is None else torch.cat([self.guidance, other.guidance])
        return Conditioning(torch.cat([self.tokens, other.tokens]), torch.cat([self.mask, other.mask]),
                            torch.cat([self.pooled, other.pooled]), guidance)

    def repeat(self, n: int) -> "Conditioning":
        guidance = None if self.guidance is None else self.guidance.repeat_interleave(n, 0)
        return Conditioning(self.tokens.repeat_interleave(n, 0), self.mask.repeat_interleave(n, 0),
                            self.pooled.repeat_interleave(n, 0), guidance)


@dataclass(frozen=True)
class TextEncoderConfig:
    vocab_size: int = 256   # set from the tokenizer
    max_length: int = 32    # tokens per caption, <bos> included
    width: int = 128        # feature size of every token
    layers: int = 2         # transformer blocks
    heads: int = 4          # attention heads per block

    def to_dict(self) -> dict:
        return asdict(self)


class TransformerBlock(nn.Module):
    """Pre-norm transformer block (GPT-2 / nanoGPT layout) with a key padding mask."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attn = attention(q, k, v, mask[:, None, None, :])
        x = x + self.proj(attn.transpose(1, 2).reshape(b, t, c))
        return x + self.mlp(self.ln2(x))


class TextEncoder(nn.Module):
    def __init__(self, cfg: TextEncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.width)
        self.pos = nn.Parameter(torch.randn(cfg.max_length, cfg.width) * 0.02)
        self.blocks = nn.ModuleList(TransformerBlock(cfg.width, cfg.heads) for _ in range(cfg.layers))
        self.ln = nn.LayerNorm(cfg.width)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> Conditioning:
        x = self.embed(ids) + self.pos[: ids.shape[1]]
        for block in self.blocks:
            x = block(x, mask)
        x = self.ln(x)
        return Conditioning(x, mask, x[:, 0])  # pooled: the <bos> token, which sees the whole caption
