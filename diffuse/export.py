"""The one way out (issue 22, item 4): every picture diffuse hands over is encoded here.

A file from `generate` or an editing command, a grid, an explain picture or GIF, a copies
picture, a training preview, the server's kept file behind a URL, a b64_json answer and a stream
preview all pass through an Exporter, so the three things that say how an image was made travel
with each of them and no caller can leave one out:

1. Its parameters: the "diffuse" JSON that Pipeline.metadata() (composite_metadata() for a
   picture of several images) put in `image.info`, written as PNG text beside AUTOMATIC1111's
   "parameters". A picture without them is refused: diffuse hands over nothing whose making it
   cannot state. What only the caller knows (an outpainting's margins) is added here, as `extra`,
   never by editing an image's metadata afterwards.
2. Its content credentials (credentials.py): a C2PA manifest built from those same parameters and
   signed with the exporter's key. An exporter without one writes unsigned pictures; that is
   what `--no-credentials` asks for, and nothing else makes one.
3. Its watermark, which is in the pixels already: the pipeline draws every start noise marked
   (watermark.py), so no later step can drop it, and the parameters record it ("watermark").

Stream previews carry their parameters (and which step they show) but are not signed: signing
costs 1.9 ms per preview here (a 64 px PNG, measured), and a stream sends two previews a step, as
much time as a sampler step of one image on these 2 cores; the stream's final image (its "done"
event) is an answer like any other and is signed.

Files are written atomically, a temporary file renamed into place: no reader, and no crash, ever
leaves half a picture under the final name.
"""

import base64
import io
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from .errors import DiffuseError

if TYPE_CHECKING:  # credentials.py imports c2pa and cryptography: only what signs pays for them
    from .credentials import Credentials


class Exporter:
    """Encodes pictures with their parameters, signed with `credentials` (None: unsigned)."""

    def __init__(self, credentials: "Credentials | None" = None):
        self.credentials = credentials

    def png(self, image: Image.Image, extra: dict | None = None) -> bytes:
        """The PNG of a picture: its text metadata (the parameters, with `extra` added), then
        its content credentials when the exporter signs."""
        text, params = recorded_text(image, extra)
        data = encode_png(image, text)
        return data if self.credentials is None else self.credentials.sign(data, params)

    def save(self, image: Image.Image, path: str | Path, extra: dict | None = None) -> Path:
        """png() written to `path`, atomically."""
        return write_atomic(path, self.png(image, extra))

    def b64(self, image: Image.Image) -> str:
        """png() as base64, for a b64_json answer."""
        return base64.b64encode(self.png(image)).decode()

    def gif(self, frames: list[Image.Image], path: str | Path, params: dict, ms: int = 250) -> Path:
        """An animation whose comment holds `params` (a GIF has no text chunks), signed with
        them when the exporter signs; written atomically."""
        if not isinstance(params, dict) or not params:
            raise DiffuseError("an animation is exported with the parameters that made it")
        buf = io.BytesIO()
        frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=ms, loop=0,
                       comment=json.dumps(params))
        data = buf.getvalue()
        if self.credentials is not None:
            data = self.credentials.sign(data, params, "image/gif")
        return write_atomic(path, data)

    @staticmethod
    def preview(image: Image.Image, params: dict) -> str:
        """A stream preview as a PNG data: URL with `params` as its text, unsigned (see the
        module docstring)."""
        data = encode_png(image, {"diffuse": json.dumps(params)})
        return "data:image/png;base64," + base64.b64encode(data).decode()


def recorded_text(image: Image.Image, extra: dict | None = None) -> tuple[dict[str, str], dict]:
    """The picture's text metadata and its parameters (the "diffuse" JSON object, with `extra`
    merged in); a picture that records none is an error."""
    text = {k: v for k, v in image.info.items() if isinstance(k, str) and isinstance(v, str)}
    try:
        params = json.loads(text["diffuse"])
    except (KeyError, ValueError):
        params = None
    if not isinstance(params, dict):
        raise DiffuseError("this picture records no diffuse parameters: diffuse exports only pictures whose making "
                           "it can state (set them with Pipeline.metadata() or composite_metadata())")
    if extra:
        params = {**params, **extra}
        text["diffuse"] = json.dumps(params)
    return text, params


def encode_png(image: Image.Image, text: dict[str, str]) -> bytes:
    meta = PngInfo()
    for k, v in text.items():
        meta.add_text(k, v)
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=meta)
    return buf.getvalue()


def write_atomic(path: str | Path, data: bytes) -> Path:
    """Write `data` to a hidden file beside `path`, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.writing")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def save_png(image: Image.Image, path: str | Path, credentials: "Credentials | None" = None) -> Path:
    """Write a picture made by a Pipeline as a PNG with its parameters, and content credentials
    signed with `credentials` when given (diffuse.credentials.load_credentials() gives the ones
    the CLI uses)."""
    return Exporter(credentials).save(image, path)
