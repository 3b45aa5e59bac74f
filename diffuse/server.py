"""The HTTP server: OpenAI's Images API, a live-progress stream, and a web page.

    diffuse serve                            # the bundled models, shapes, emoji, shapes-fast: http://127.0.0.1:8000
    diffuse serve --model runs/mine --model emoji   # any checkpoints; the first is the default

  POST /v1/images/generations  JSON: prompt, n, size "WxH", response_format (url | b64_json), model,
                               and diffuse's seed (0 to 2^32 - 1), steps, sampler, guidance, negative_prompt
  POST /v1/images/edits        multipart: image, mask (optional), prompt, n, size, ... , strength
  POST /v1/images/variations   multipart: image, n, size, ... (prompt: the image's own, if it records one)
  POST /v1/diffuse/stream      JSON or form, the fields of the three above: server-sent events, one per
                               sampler step (index, sigma, preview), then the images with their parameters
  POST /v1/diffuse/inspect     multipart: image; what it records (parameters, the command that makes it
                               again, whether its content credentials are valid) and its watermark as
                               the served models read it, as diffuse inspect --json
  GET  /v1/images/{id}.png     the images answered by url, kept in the output folder
  GET  /v1/models, /v1/diffuse/config, /healthz
  GET  /                       the web page (static files; the page asks for the API key itself)
  GET  /openapi.json, /docs    the API's OpenAPI schema (openapi.py derives it from the models below)
                               and Swagger UI to try it, served from this package (no CDN)

A request's `model` picks one of the served models (GET /v1/models), each loaded once; one worker
thread runs every job, whichever model it names. Every request becomes one `GenerateRequest`
and a model; every error is OpenAI's
`{"error": {"message", "type", "param", "code"}}` with a 4xx status (5xx only for bugs). With an
API key, every endpoint except the page's static files, the docs and the schema needs
`Authorization: Bearer KEY`: a browser cannot attach a header to a page it navigates to, and
none of them holds data (the schema does name the served models).
"""

import asyncio
import dataclasses
import io
import json
import logging
import re
import secrets
import threading
import time
from pathlib import Path
from typing import Literal

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from uvicorn.protocols.http.h11_impl import H11Protocol
from starlette.exceptions import HTTPException as StarletteHTTPException

from .data import example_prompts, tensor_to_pil
from .explain import display
from .editing import VARY_STRENGTH, has_transparency, open_image
from . import openapi
from .errors import DiffuseError
from .export import Exporter
from .pipeline import (DEFAULT_SAMPLER, INPAINT_SAMPLER, MAX_GUIDANCE, MAX_IMAGES, MAX_SEED, MAX_STEPS,
                       GenerateRequest, Pipeline, recorded_prompt)
from .samplers import SAMPLERS, Step
from .worker import Job, JobCancelled, QueueFull, Worker

log = logging.getLogger("diffuse.server")
WEB_DIR = Path(__file__).parent / "web"
DOCS_DIR = Path(fastapi_offline.__file__).parent / "static"  # Swagger UI's files, so /docs needs no CDN
IMAGE_ID = re.compile(r"[0-9a-f]{32}")  # what save() names files: nothing else can reach the disk
# Bounded ASCII digits: the model's own rule then names the limit. (\d also took other scripts'
# digits, "٣٢x٣٢" for 32x32, and leading zeros "0032x32": the schema's pattern takes neither.)
SIZE = re.compile(r"([1-9][0-9]{0,8})x([1-9][0-9]{0,8})")
PREVIEW_SIDE = 64  # largest side of a step preview sent over the stream


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one request may ask of the server (each refused with a 400 or 413 naming the limit)."""

    n: int = 10                         # images per request (OpenAI's own cap)
    steps: int = 100                    # sampler steps per request
    upload_bytes: int = 4 * 2 ** 20     # per uploaded image (OpenAI's 4 MB)
    upload_pixels: int = 2048 * 2048    # per uploaded image, read from its header before decoding
    keep: int = 1000                    # images kept in the output folder, oldest removed first (0: no limit)
    keep_bytes: int = 0                 # bytes kept in the output folder, likewise (0: no limit)
    body_seconds: float = 60.0          # a request's whole body must arrive within this (408 after)

    @property
    def body_bytes(self) -> int:
        """A whole request: an image and a mask at their limit plus the form fields."""
        return 2 * self.upload_bytes + 64 * 1024


class ApiError(Exception):
    """An answer in OpenAI's error shape. `type` follows OpenAI's: invalid_request_error for the
    client's mistakes, requests for rate limits, server_error for bugs."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type: str = "invalid_request_error", headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type
        self.headers = headers

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


# ----------------------------------------------------------------------------- what clients send

DEFAULTS = {f.name: f.default for f in dataclasses.fields(GenerateRequest)}  # what a field left out gets


def about(text: str, default=None):
    """A field's default and its description in the published schema (/docs shows it)."""
    return Field(default, description=text)


class GenerationFields(BaseModel):
    """POST /v1/images/generations. Unknown fields are refused, as OpenAI refuses them, so a
    misspelt option is not silently ignored; OpenAI's user, quality and style are accepted and have
    no effect on a local model."""

    model_config = ConfigDict(extra="forbid")
    prompt: str
    n: int | None = about(f"images; image k gets seed + k (default {DEFAULTS['n']})")
    size: str | None = about("WIDTHxHEIGHT, a multiple of the model's stride up to 4x its size; default "
                             "(or auto): the model's size, or the image's")
    response_format: Literal["url", "b64_json"] = "url"
    model: str | None = about("one of GET /v1/models (default: the first)")
    negative_prompt: str | None = about("what guidance steers away from")
    seed: int | None = about("default: a random one, recorded in every image")
    steps: int | None = about(f"sampler steps (default {DEFAULTS['steps']})")
    sampler: str | None = about(f"default: {DEFAULT_SAMPLER}, {INPAINT_SAMPLER} for inpainting")
    guidance: float | None = about(f"classifier-free guidance scale: 1 off, 0 unconditional (default {DEFAULTS['guidance']})")
    user: str | None = about("accepted, as OpenAI's; no effect")
    quality: str | None = about("accepted, as OpenAI's; no effect")
    style: str | None = about("accepted, as OpenAI's; no effect")


class EditFields(GenerationFields):
    """POST /v1/images/edits (multipart, so values arrive as text and are converted)."""

    strength: float | None = about("how much of the schedule runs on the image (default: 1 inpainting, "
                                   "0.8 image-to-image)")


class VariationFields(EditFields):
    """POST /v1/images/variations: OpenAI sends no prompt; one may be given."""

    prompt: str | None = about("default: the prompt the image records, else none")


class InspectFields(BaseModel):
    """POST /v1/diffuse/inspect: the image file alone."""

    model_config = ConfigDict(extra="forbid")


class StreamFields(VariationFields):
    """POST /v1/diffuse/stream: any of the above, starting from an upload or a kept image."""

    image_id: str | None = about("an image this server made (the name in its url), instead of an upload")
    variations: bool = about("variations of the image, as /v1/images/variations", False)


SAMPLING_FIELDS = {"n", "negative_prompt", "seed", "steps", "sampler", "guidance"}  # passed on as they are


def checked_fields(limits: Limits, pipes: list[Pipeline]) -> dict[str, dict]:
    """What this server checks after the request models, as JSON-schema keywords for its OpenAPI
    schema. The checks themselves stay where they are (GenerateRequest, job, parse_size, check_size),
    whose messages name the limit."""
    return {"n": {"minimum": 1, "maximum": min(limits.n, MAX_IMAGES)},
            "steps": {"minimum": 1, "maximum": min(limits.steps, MAX_STEPS)},
            "seed": {"minimum": 0, "maximum": MAX_SEED}, "guidance": {"minimum": 0, "maximum": MAX_GUIDANCE},
            "strength": {"minimum": 0, "maximum": 1}, "sampler": {"enum": list(SAMPLERS)},
            "model": {"enum": [p.name for p in pipes]}, "size": {"pattern": size_pattern(pipes)},
            "image_id": {"pattern": f"^{IMAGE_ID.pattern}$"}}


def size_pattern(pipes: list[Pipeline]) -> str:
    """The sizes some served model draws (check_size: each side a multiple of its stride, up to 4x
    its training size), as a pattern; a side one model draws may still be too large for another."""
    sides = sorted({k * p.model.unet_cfg.stride for p in pipes
                    for k in range(1, 4 * p.model.image_size // p.model.unet_cfg.stride + 1)})
    side = "|".join(map(str, sides))
    return f"^(auto|({side})x({side}))$"


def parse_fields(model: type[BaseModel], data, strict: bool) -> BaseModel:
    """Validated fields, or a 400 naming the first wrong one (strict for JSON: "3" is not a number)."""
    if not isinstance(data, dict):
        raise ApiError(400, "the body must be a JSON object")
    try:
        return model.model_validate(data, strict=strict)
    except ValidationError as e:
        raise invalid(e.errors()) from None


def invalid(errors: list[dict]) -> ApiError:
    """A 400 naming the first wrong field of a pydantic (or FastAPI) validation error."""
    err = errors[0]
    param = ".".join(str(p) for p in err["loc"] if p != "body") or None
    message = "unrecognized request argument supplied" if err["type"] == "extra_forbidden" else err["msg"]
    return ApiError(400, f"{param}: {message}" if param else message, param=param)


async def read_json(request: Request) -> dict:
    body = await request.body()
    try:
        data = json.loads(body)
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
        raise ApiError(400, f"the body is not valid JSON ({e})") from None
    except RecursionError:  # json's parser recurses once per [ or {: "[[[[...]]]]" ran out of stack (a 500)
        raise ApiError(400, "the body is not valid JSON (nested too deeply)") from None
    if isinstance(data, dict):
        check_text(data)
    return data


def check_text(fields: dict) -> None:
    """Refuse a name or text that no UTF-8 can hold: JSON's \\u escapes can spell lone surrogates
    ("\\ud800"), and a prompt with one failed later, when its PNG's metadata was written (a 500)."""
    for key, value in fields.items():
        for text in (key, value):
            if isinstance(text, str) and not text.isascii():
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError:
                    param = key if text is value else None
                    raise ApiError(400, f"{param or 'a field name'}: not valid Unicode text (it holds a lone "
                                   "surrogate)", param=param) from None


async def read_form(request: Request, uploads: tuple[str, ...]) -> tuple[dict, dict[str, UploadFile]]:
    """Text fields and the files named in `uploads`, of a multipart or urlencoded form; one file per
    name ("image[]", as OpenAI's client names a list of images, counts as "image"). A file under
    another name is refused as an unknown field is, not ignored."""
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        raise ApiError(400, "send multipart/form-data: text fields and image files")
    form = await request.form(max_files=4, max_fields=64)
    fields, files = {}, {}
    for key, value in form.multi_items():
        name = key.removesuffix("[]")
        is_file = isinstance(value, UploadFile)
        if is_file and name not in uploads:
            raise ApiError(400, f"{name}: unrecognized request argument supplied (a file)", param=name)
        if not is_file and name in uploads:
            raise ApiError(400, f"{name}: send an image file (a multipart upload), not text", param=name)
        if name in fields or name in files:
            raise ApiError(400, f"{name}: give it once", param=name)
        (files if is_file else fields)[name] = value
    return fields, files


async def read_any(request: Request, uploads: tuple[str, ...]) -> tuple[dict, dict[str, UploadFile], bool]:
    """JSON (strictly typed) or a form (text converted); the last item says which."""
    if request.headers.get("content-type", "").startswith("application/json"):
        return await read_json(request), {}, True
    return *await read_form(request, uploads), False


# ----------------------------------------------------------------------------- the app

def prune_outputs(folder: Path, keep: int, keep_bytes: int, spare: Path | None = None) -> list[Path]:
    """Remove the oldest images of the output folder until at most `keep` of them and `keep_bytes`
    bytes are left (0: no limit on that); `spare` (the image just saved) always stays. Returns
    what was removed. Without it the folder grows with every answer for as long as the server runs."""
    if not keep and not keep_bytes:
        return []
    entries = []
    for p in folder.glob("*.png"):
        try:
            st = p.stat()
        except FileNotFoundError:  # removed meanwhile
            continue
        entries.append((st.st_mtime_ns, p.name, p, st.st_size))
    entries.sort(reverse=True)  # newest first
    kept_n, kept_bytes, removed = 0, 0, []
    for _, _, p, size in entries:
        if p == spare or ((not keep or kept_n < keep) and (not keep_bytes or kept_bytes + size <= keep_bytes)):
            kept_n, kept_bytes = kept_n + 1, kept_bytes + size
            continue
        p.unlink(missing_ok=True)
        removed.append(p)
    return removed


class Server:
    """The state the routes share: the models (by name, the first the default), their one worker,
    the output folder and the limits."""

    def __init__(self, pipes: list[Pipeline], output_dir: Path, limits: Limits, queue_size: int, credentials=None,
                 max_batch: int = 1):
        self.export = Exporter(credentials)  # every answered image leaves through it (export.py)
        self.pipes = by_name(pipes)
        self.default = pipes[0].name
        self.output_dir, self.limits = Path(output_dir), limits
        self.worker = Worker(queue_size, max_batch)
        self.started = int(time.time())
        self._pruning = threading.Lock()  # answers are saved from several threads

    def pipe(self, name: str | None) -> Pipeline:
        """The model a request names (None: the default), or OpenAI's 404."""
        if name is None:
            return self.pipes[self.default]
        if name not in self.pipes:
            served = ", ".join(map(repr, self.pipes))
            raise ApiError(404, f"the model {name!r} does not exist: this server has {served}", param="model",
                           code="model_not_found")
        return self.pipes[name]

    # --- requests

    async def upload_bytes(self, files: dict[str, UploadFile], name: str) -> bytes:
        """A required upload's bytes, within the byte limit."""
        file = files.get(name)
        if file is None:
            raise ApiError(400, f"{name}: an image file is required", param=name)
        data = await file.read(self.limits.upload_bytes + 1)
        if len(data) > self.limits.upload_bytes:
            raise ApiError(413, f"{name}: larger than {self.limits.upload_bytes} bytes", param=name,
                           code="upload_too_large")
        return data

    async def upload(self, files: dict[str, UploadFile], name: str, required: bool):
        """An uploaded image, checked for bytes and pixels before it is decoded."""
        if files.get(name) is None and not required:
            return None
        data = await self.upload_bytes(files, name)
        try:
            return open_image(io.BytesIO(data), name, self.limits.upload_pixels)
        except DiffuseError as e:
            raise ApiError(400, str(e), param=name) from None

    def kept_path(self, image_id: str) -> Path | None:
        """The file of an image this server saved, or None: only 32 hex digits ever reach the disk."""
        path = self.output_dir / f"{image_id}.png" if IMAGE_ID.fullmatch(image_id) else None
        return path if path is not None and path.is_file() else None

    def kept_image(self, image_id: str):
        if not IMAGE_ID.fullmatch(image_id):
            raise ApiError(400, "image_id must be the 32 hex digits of an image this server made", param="image_id")
        if (path := self.kept_path(image_id)) is None:
            raise ApiError(404, f"no image {image_id}", param="image_id", code="not_found")
        return open_image(path)

    def job(self, f: GenerationFields, image=None, mask=None, vary: bool = False) -> Job:
        """The job a request describes: one GenerateRequest, checked against the limits and the
        model it names, and that model.

        Edits follow OpenAI: transparent pixels (alpha 0) of the mask are the area to repaint; with
        no mask, the image's own transparent pixels are; a mask without transparency is read as
        white = repaint (diffusers' convention). An image with neither is image-to-image at
        `strength` (default 0.8), as diffusers' users expect. Variations are the CLI's `vary`:
        image-to-image at strength 0.4 with new seeds, prompted by the given prompt, else the
        prompt the image records, else none (unconditional)."""
        pipe = self.pipe(f.model)
        for name, limit in (("n", self.limits.n), ("steps", self.limits.steps)):
            value = getattr(f, name)
            if value is not None and not 1 <= value <= limit:
                raise ApiError(400, f"{name} must be from 1 to {limit} on this server, got {value}", param=name)
        width, height = parse_size(f.size)
        prompt, strength = f.prompt, getattr(f, "strength", None)
        if vary:
            prompt = prompt if prompt is not None else recorded_prompt(image) or ""
            strength = VARY_STRENGTH if strength is None else strength
        elif image is not None and mask is None and has_transparency(image):
            mask = image
        if prompt is None:
            raise ApiError(400, "prompt: a prompt is required", param="prompt")
        request = GenerateRequest(prompt=prompt, width=width, height=height, init_image=image, mask=mask,
                                  strength=strength, **{**pipe.defaults,  # a distilled model's steps and sampler
                                                         **f.model_dump(include=SAMPLING_FIELDS, exclude_none=True)})
        pipe.check(request)
        return Job(request.with_seed(), pipe)

    async def run(self, request: Request, job: Job) -> list:
        """The job's images; if the client disconnects first, the job is cancelled."""
        self.submit(job)
        images = asyncio.wrap_future(job.future)
        gone = asyncio.create_task(wait_for_disconnect(request))
        try:
            await asyncio.wait({images, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if not images.done():
            job.cancel()
            images.cancel()
            raise ClientGone()
        return images.result()

    def submit(self, job: Job) -> None:
        try:
            self.worker.submit(job)
        except QueueFull as e:
            raise ApiError(429, str(e), code="rate_limit_exceeded", type="requests",
                           headers={"Retry-After": str(e.retry_after)}) from None

    # --- answers

    def save(self, image) -> str:
        """Keep an image in the output folder under a random id (with its PNG metadata)."""
        image_id = secrets.token_hex(16)
        path = self.output_dir / f"{image_id}.png"
        self.export.save(image, path)
        with self._pruning:
            prune_outputs(self.output_dir, self.limits.keep, self.limits.keep_bytes, spare=path)
        return image_id

    def answer(self, request: Request, images: list, response_format: str, with_parameters: bool = False) -> dict:
        """OpenAI's images response; the stream adds each image's id and parameters."""
        data = []
        for img in images:
            if response_format == "b64_json":
                item = {"b64_json": self.export.b64(img)}
            else:
                image_id = self.save(img)
                item = {"url": str(request.url_for("image_file", name=f"{image_id}.png"))}
                if with_parameters:
                    item["id"] = image_id
            if with_parameters:
                item["parameters"] = json.loads(img.info["diffuse"])
            data.append(item)
        return {"created": int(time.time()), "data": data}

    def config(self) -> dict:
        """What the web page needs to build its form: the models (sizes, example prompts),
        samplers, defaults and limits."""
        defaults = {name: DEFAULTS[name] for name in ("steps", "guidance", "n")}
        defaults.update(sampler=DEFAULT_SAMPLER, inpaint_sampler=INPAINT_SAMPLER)  # a request naming none gets these
        return {"model": self.default, "models": [model_info(p) for p in self.pipes.values()],
                "samplers": list(SAMPLERS), "defaults": defaults, "vary_strength": VARY_STRENGTH,
                "limits": dataclasses.asdict(self.limits)}

    def model_cards(self) -> list[dict]:
        return [{"id": name, "object": "model", "created": self.started, "owned_by": "diffuse"} for name in self.pipes]


def model_info(pipe: Pipeline) -> dict:
    """A model as the page shows it: its training size, the sizes it draws (up to 4x, as
    check_size allows) and a few prompts it knows, from its checkpoint's data summary."""
    size = pipe.model.image_size
    info = {"id": pipe.name, "image_size": size, "sizes": [f"{k * size}x{k * size}" for k in (1, 2, 3, 4)],
            "prompts": example_prompts(pipe.config.get("data") or {})}
    if pipe.student:  # it samples only as it was distilled (pipeline.check_student_request)
        info.update(sampling=pipe.defaults, guidance_range=pipe.student["guidance_range"],
                    any_steps=bool(pipe.student.get("any_steps")))  # a consistency model takes any steps
    return info


def by_name(pipes: list[Pipeline]) -> dict[str, Pipeline]:
    """Requests name a model by its name, so two models may not share one."""
    if not pipes:
        raise DiffuseError("no model to serve")
    named = {}
    for pipe in pipes:
        if pipe.name in named:
            raise DiffuseError(f"two models are named {pipe.name!r}: a request could not tell them apart "
                               "(serve folders with different names)")
        named[pipe.name] = pipe
    return named


class ClientGone(Exception):
    """The client disconnected before its answer was ready (nobody reads the response)."""


async def wait_for_disconnect(request: Request) -> None:
    """Returns when the client disconnects (the body has been read, so only that message is left)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def parse_size(size: str | None) -> tuple[int | None, int | None]:
    if size is None or size == "auto":
        return None, None
    m = SIZE.fullmatch(size)
    if not m:
        raise ApiError(400, f"size must be WIDTHxHEIGHT such as 32x32, got {size!r}", param="size")
    return int(m[1]), int(m[2])


def step_event(step: Step, made_by: dict) -> dict:
    """A step for the stream: its index, noise level, and small pictures of the noisy image it
    started from and of the model's guess of the clean one (the web page's "how it formed"),
    each recording `made_by` (the first image's parameters) and what it shows."""
    shown = {"picture": "preview", "step": step.index, "of": step.total, "sigma": float(step.sigma), "images": [made_by]}
    return {"index": step.index, "total": step.total, "sigma": step.sigma,
            "preview": preview_url(step.denoised[0], {**shown, "shows": "denoised"}),
            "noisy": preview_url(display(step.x[0], step.sigma), {**shown, "shows": "noisy"})}


def preview_url(x: "torch.Tensor", params: dict) -> str:
    """A [-1, 1] image as a PNG data: URL no larger than PREVIEW_SIDE, recording `params`."""
    picture = tensor_to_pil(x)
    picture.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
    return Exporter.preview(picture, params)


def sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


def api_error(e: Exception) -> ApiError:
    """What a job's failure tells the client: its own mistake (400), a shutdown (503) or a bug (500)."""
    if isinstance(e, ApiError):
        return e
    if isinstance(e, DiffuseError):
        return ApiError(400, str(e))
    if isinstance(e, JobCancelled):
        return ApiError(503, "the job was cancelled: the server is shutting down", type="server_error")
    return ApiError(500, "internal server error (see the server's log)", type="server_error")





# ----------------------------------------------------------------------------- connections

class HeadDeadlineProtocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with one more limit: a request's line and headers must arrive
    within `timeout_keep_alive` seconds of the connection opening or of the previous response.
    uvicorn arms its keep-alive timer only after a response and disarms it at the first byte, so
    a connection that sends nothing, or a header a byte at a time (slowloris), was kept for ever;
    `--limit-concurrency` such connections then shut every other client out with 503s."""

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm_head_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_head_deadline()

    def _arm_head_deadline(self) -> None:
        self.loop.call_later(self.timeout_keep_alive, self._head_deadline, self.cycle)

    def _head_deadline(self, cycle) -> None:
        # A new request makes a new cycle; the same one means no request head came in time. One
        # still being answered (a long stream) is not idle.
        if self.cycle is cycle and (cycle is None or cycle.response_complete) and not self.transport.is_closing():
            self.transport.close()


# ----------------------------------------------------------------------------- guard and routes

class Guard:
    """Runs before any route: the API key (every path but the page's files, the docs' and the
    schema) and the body's size (from Content-Length, and counted for bodies sent without one)."""

    PUBLIC = re.compile(r"/|/static/[\w-]+\.(html|js|css)|/docs|/docs/files/[\w-]+\.(js|css)|/openapi\.json")

    def __init__(self, app, api_key: str | None, max_body: int, body_seconds: float = 60.0):
        self.app, self.api_key, self.max_body, self.body_seconds = app, api_key, max_body, body_seconds

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.api_key and not self.PUBLIC.fullmatch(scope["path"]) and not self.authorized(headers):
            err = ApiError(401, "a valid API key is required: send Authorization: Bearer KEY",
                           code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
            return await err.response()(scope, receive, send)
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body:
            return await self.too_large().response()(scope, receive, send)
        await self.app(scope, self.counting(receive), send)

    def authorized(self, headers: dict) -> bool:
        scheme, _, key = headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and secrets.compare_digest(key.strip().encode(), self.api_key.encode())

    def too_large(self) -> ApiError:
        return ApiError(413, f"the request body is larger than {self.max_body} bytes", code="upload_too_large")

    def counting(self, receive):
        """`receive` with the body's size counted and its time bounded: a client that sends a body
        byte by byte (or stops) would otherwise hold its handler and buffer for ever. The clock
        starts at the first read and stops when the body is complete; what comes after (a stream
        waiting for the client to leave) may take as long as it likes."""
        seen, deadline, complete = 0, None, False

        async def wrapped():
            nonlocal seen, deadline, complete
            if complete:
                return await receive()
            loop = asyncio.get_running_loop()
            deadline = deadline or loop.time() + self.body_seconds
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                raise ApiError(408, f"the request body did not arrive within {self.body_seconds:g} s",
                               code="request_timeout") from None
            seen += len(message.get("body", b""))
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            if seen > self.max_body:
                raise self.too_large()
            return message
        return wrapped


def add_error_handlers(app: FastAPI) -> None:
    """Every error in OpenAI's shape: FastAPI's own 422s become 400s, unknown routes 404s."""

    @app.exception_handler(ApiError)
    @app.exception_handler(DiffuseError)
    @app.exception_handler(JobCancelled)
    async def known_error(request, e: Exception):
        return api_error(e).response()

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, e: RequestValidationError):
        return invalid(e.errors()).response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, e: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code)
        return ApiError(e.status_code, str(e.detail), code=code, headers=e.headers).response()

    @app.exception_handler(ClientGone)
    async def client_gone(request, e: ClientGone):
        return Response(status_code=499)  # nginx's "client closed request": nobody reads it

    @app.exception_handler(Exception)
    async def bug(request, e: Exception):
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return api_error(e).response()


Model = str | Path | Pipeline


def create_app(models: Model | list[Model], *, output_dir: str | Path, api_key: str | None = None,
               queue_size: int = 64, limits: Limits = Limits(), credentials=None, max_batch: int = 1) -> FastAPI:
    """The server as an ASGI app (run it with uvicorn). `models` are checkpoint directories,
    bundled models' names or loaded Pipelines (one, or a list whose first is the default);
    `queue_size` jobs may wait behind the running one before requests get 429; waiting
    text-to-image jobs with the same settings run together, up to `max_batch` images (worker.py). With
    `credentials` (diffuse.credentials), every image answered, by url or b64_json, carries a signed
    C2PA manifest; the step previews of the stream carry their parameters but no signature
    (export.py says why)."""
    models = models if isinstance(models, (list, tuple)) else [models]
    pipes = [m if isinstance(m, Pipeline) else Pipeline.load(m) for m in models]
    server = Server(pipes, Path(output_dir), limits, queue_size, credentials, max_batch)

    async def lifespan(app):
        yield
        server.worker.stop()

    app = FastAPI(title="diffuse", version=version(), description=API_DESCRIPTION, lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url="/openapi.json")
    app.state.server = server
    app.add_middleware(Guard, api_key=api_key or None, max_body=limits.body_bytes, body_seconds=limits.body_seconds)
    add_error_handlers(app)
    add_routes(app, server)
    add_docs(app, api_key=bool(api_key))
    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")
    return app


API_DESCRIPTION = """OpenAI's Images API served by a diffuse model, plus a live-progress stream.
Every error is OpenAI's `{"error": {"message", "type", "param", "code"}}` with a 4xx status."""


def version() -> str:
    from importlib.metadata import PackageNotFoundError, version as installed
    try:
        return installed("diffuse")
    except PackageNotFoundError:  # run from a source tree
        return "0"


def add_docs(app: FastAPI, api_key: bool) -> None:
    """/openapi.json (FastAPI's, made true to the server by openapi.finish) and Swagger UI at
    /docs, whose files come with this package (fastapi-offline's copy): no CDN, as the page."""
    def schema():
        if app.openapi_schema is None:
            app.openapi_schema = openapi.finish(get_openapi(title=app.title, version=app.version,
                                                            description=app.description, routes=app.routes), api_key)
        return app.openapi_schema
    app.openapi = schema

    @app.get("/docs", include_in_schema=False)
    async def docs():
        return get_swagger_ui_html(openapi_url="/openapi.json", title="diffuse API", swagger_favicon_url="data:,",
                                   swagger_js_url="/docs/files/swagger-ui-bundle.js",
                                   swagger_css_url="/docs/files/swagger-ui.css")
    app.mount("/docs/files", StaticFiles(directory=DOCS_DIR), name="docs-files")


class PNGFile(FileResponse):
    media_type = "image/png"  # so the schema states the image's answer as such


# What a route that queues a job may answer besides its images (the API key's 401 is added by
# openapi.finish where a key is set).
JOB_ERRORS = openapi.errors(400, 404, 413, 429, 503)
IMAGES = {200: {"model": openapi.ImagesResponse, "description": "the images"}}


def add_routes(app: FastAPI, server: Server) -> None:
    checks = checked_fields(server.limits, list(server.pipes.values()))

    def form(model, **files):
        return openapi.body_schema(model, checks, files=files)

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(WEB_DIR / "index.html")

    @app.get("/healthz", operation_id="health", summary="The worker's state",
             responses={200: {"model": openapi.Health}})
    async def healthz():
        return {"status": "ok", "model": server.default, "models": list(server.pipes), **server.worker.status()}

    @app.get("/v1/models", operation_id="listModels", summary="The models this server draws with",
             responses={200: {"model": openapi.ModelList}})
    async def models():
        return {"object": "list", "data": server.model_cards()}

    @app.get("/v1/diffuse/config", operation_id="getConfig", summary="What the web page builds its form from",
             responses={200: {"model": openapi.Config}})
    async def config():
        return server.config()

    @app.get("/v1/images/{name}", name="image_file", operation_id="getImage", summary="An image answered by url",
             response_class=PNGFile, responses={200: {"content": {"image/png": {"schema": openapi.BINARY}}},
                                                **openapi.errors(404)})
    async def image_file(name: str):
        path = server.kept_path(name.removesuffix(".png")) if name.endswith(".png") else None
        if path is None:
            raise ApiError(404, f"no image {name!r}", code="not_found")
        return FileResponse(path, media_type="image/png")

    @app.post("/v1/images/generations", operation_id="createImage", summary="Draw images from a prompt",
              responses={**IMAGES, **JOB_ERRORS},
              openapi_extra=openapi.request_body(json=openapi.body_schema(GenerationFields, checks)))
    async def generations(request: Request):
        f = parse_fields(GenerationFields, await read_json(request), strict=True)
        images = await server.run(request, server.job(f))
        return server.answer(request, images, f.response_format)

    @app.post("/v1/images/edits", operation_id="createImageEdit", responses={**IMAGES, **JOB_ERRORS},
              summary="Repaint an image's transparent (or masked) area, or redraw it image-to-image",
              openapi_extra=openapi.request_body(form=form(EditFields, image=True, mask=False)))
    async def edits(request: Request):
        fields, files = await read_form(request, ("image", "mask"))
        f = parse_fields(EditFields, fields, strict=False)
        image, mask = await server.upload(files, "image", True), await server.upload(files, "mask", False)
        images = await server.run(request, server.job(f, image, mask))
        return server.answer(request, images, f.response_format)

    @app.post("/v1/images/variations", operation_id="createImageVariation", responses={**IMAGES, **JOB_ERRORS},
              summary="Variations of an image (prompted by its recorded prompt unless one is given)",
              openapi_extra=openapi.request_body(form=form(VariationFields, image=True)))
    async def variations(request: Request):
        fields, files = await read_form(request, ("image",))
        f = parse_fields(VariationFields, fields, strict=False)
        image = await server.upload(files, "image", True)
        images = await server.run(request, server.job(f, image, vary=True))
        return server.answer(request, images, f.response_format)

    @app.post("/v1/diffuse/inspect", operation_id="inspectImage",
              responses={200: {"model": openapi.InspectReport, "description": "what the image records"},
                         **openapi.errors(400, 413)},
              summary="What an image records: its parameters, the command that makes it again, whether its "
                      "content credentials (C2PA) are valid, and its start-noise watermark as the served models read it", openapi_extra=openapi.request_body(form=form(InspectFields, image=True)))
    async def inspect(request: Request):
        from .provenance import inspect_bytes
        fields, files = await read_form(request, ("image",))
        parse_fields(InspectFields, fields, strict=False)
        data = await server.upload_bytes(files, "image")
        try:  # C2PA validation is CPU work: off the event loop
            # The watermark is read with every served model (an inversion each: about a second).
            return await run_in_threadpool(inspect_bytes, data, files["image"].filename or "image",
                                           list(server.pipes.values()))
        except DiffuseError as e:
            raise ApiError(400, str(e), param="image") from None

    @app.post("/v1/diffuse/stream", operation_id="streamImages", response_class=StreamingResponse,
              summary="Any of the three, with a server-sent event per sampler step", description=openapi.STREAM_TEXT,
              responses={200: {"description": "the events", "content": openapi.event_stream(openapi.STREAM)},
                         **JOB_ERRORS},
              openapi_extra=openapi.request_body(json=openapi.body_schema(StreamFields, checks),
                                                 form=form(StreamFields, image=False, mask=False)))
    async def stream(request: Request):
        fields, files, strict = await read_any(request, ("image", "mask"))
        f = parse_fields(StreamFields, fields, strict=strict)
        image = await server.upload(files, "image", False)
        if f.image_id is not None:
            if image is not None:
                raise ApiError(400, "give an image or an image_id, not both", param="image_id")
            image = server.kept_image(f.image_id)
        if f.variations and image is None:
            raise ApiError(400, "variations need an image or an image_id", param="image")
        job = server.job(f, image, await server.upload(files, "mask", False), vary=f.variations)
        events = watch(job)
        server.submit(job)  # a full queue answers 429 before the stream starts
        return StreamingResponse(stream_events(server, request, job, events, f.response_format),
                                 media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def watch(job: Job) -> asyncio.Queue:
    """The job's steps as stream events in an asyncio queue, then None when it ends (set before
    the job is queued: the worker may start it at once)."""
    loop, events = asyncio.get_running_loop(), asyncio.Queue()
    r = job.request
    made_by = json.loads(job.pipe.metadata(r, r.seed)["diffuse"])
    job.on_step = lambda step: loop.call_soon_threadsafe(events.put_nowait, step_event(step, made_by))
    job.future.add_done_callback(lambda _: loop.call_soon_threadsafe(events.put_nowait, None))
    return events


async def stream_events(server: Server, request: Request, job: Job, events: asyncio.Queue, response_format: str):
    """queued, one `step` per sampler step, then `done` (or `error`). Leaving early (the client
    disconnected) cancels the job."""
    try:
        yield sse("queued", {"waiting": server.worker.queue.qsize(), "seed": job.request.seed})
        while (event := await events.get()) is not None:
            yield sse("step", event)
        try:
            images = job.future.result()
        except Exception as e:
            if not isinstance(e, (DiffuseError, JobCancelled)):
                log.error("generation failed", exc_info=e)
            yield sse("error", api_error(e).body())
            return
        yield sse("done", server.answer(request, images, response_format, with_parameters=True))
    finally:
        job.cancel()
