"""Schemathesis hooks for benchmarks/schema_fuzz.py (it sets SCHEMATHESIS_HOOKS to this module).

Uploads that are images, some of the time: a schema can say "binary", not "a PNG the model can
draw on", so Schemathesis uploads random bytes, which the server rightly refuses before any job:
the edit, variation and inpainting paths behind the decoder would go untried. Here an upload is,
as often as not, a real PNG drawn from a few that matter (the model's size and others, opaque,
with transparent pixels, a mask, a wrong size).

And a guard around a Schemathesis bug that ended the stream's fuzzing phase (before_generate_body).
"""

import io

import schemathesis
from hypothesis import reject, strategies as st
from PIL import Image


def png(size: tuple[int, int], mode: str = "RGB", clear: bool = False) -> bytes:
    img = Image.new("RGB", size, (200, 40, 40)).convert(mode)
    if clear:  # the left half transparent: OpenAI's "repaint here"
        img.paste((0, 0, 0, 0), (0, 0, size[0] // 2, size[1]))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


IMAGES = [png((32, 32)), png((32, 32), "RGBA", clear=True), png((64, 32)), png((16, 16), "L"), png((33, 32)),
          png((24, 40), "RGBA")]


@schemathesis.hook
def flatmap_body(context, body):
    uploads = [k for k in ("image", "mask") if isinstance(body, dict) and isinstance(body.get(k), bytes)]
    if not uploads:
        return st.just(body)
    images = st.fixed_dictionaries({k: st.sampled_from(IMAGES) for k in uploads})
    return st.one_of(st.just(body), images.map(lambda chosen: {**body, **chosen}))


@schemathesis.hook
def before_generate_body(context, strategy):
    """Schemathesis 4.32's negative mode checks a drawn multipart body with jsonschema_rs, which
    cannot read its upload wrapper (ValueError "Unsupported type: 'Binary'") when the form has no
    required field, as the stream's has not: such a draw is dropped instead of ending the phase."""
    @st.composite
    def guarded(draw):
        try:
            return draw(strategy)
        except ValueError as e:
            if "Unsupported type" not in str(e):
                raise
            reject()
    return guarded()
