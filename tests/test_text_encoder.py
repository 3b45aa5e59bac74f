import torch

from diffuse.text_encoder import TextEncoder, TextEncoderConfig, WordTokenizer


def test_tokenizer_vocab_from_captions_handles_unknown_and_empty():
    tok = WordTokenizer.build(["a red circle", "a blue square, large"], max_length=6)
    ids, mask = tok.encode(["a red circle", "", "a purple hexagon on a very very long caption"])
    assert ids[0, 0] == 2 and mask[1].tolist() == [True] + [False] * 5  # <bos> alone for ""
    assert ids[2, 2] == 1 and ids[2, 3] == 1  # unknown words map to <unk>
    assert mask[2].all()  # cut at max_length
    assert tok.unknown_words("a purple circle") == ["purple"]
    assert tok.cut_words("a purple hexagon on a very very long caption") == ["very", "very", "long", "caption"]
    assert tok.cut_words("a red circle, large") == []  # <bos> and 5 tokens fit in 6
    assert WordTokenizer.from_config(tok.to_config()).vocab == tok.vocab


def test_encoder_pads_do_not_change_the_encoding():
    tok = WordTokenizer.build(["a red circle"], max_length=8)
    enc = TextEncoder(TextEncoderConfig(vocab_size=len(tok), max_length=8, width=32, layers=2, heads=2)).eval()
    ids, mask = tok.encode(["a red circle"])
    short = WordTokenizer(tok.vocab, max_length=4).encode(["a red circle"])
    full, cut = enc(ids, mask), enc(*short)
    assert torch.allclose(full.pooled, cut.pooled, atol=1e-5)
