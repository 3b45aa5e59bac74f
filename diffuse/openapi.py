"""The API's OpenAPI description (/openapi.json, and /docs to try it), derived from the code.

The routes read their bodies themselves: JSON strictly typed ("3" is not a number), forms
converted, every mistake one line in OpenAI's error shape, and one route takes JSON or a form.
FastAPI cannot see such bodies, so each route states its body through `openapi_extra`: the JSON
schema of the very pydantic model it validates with, plus what the server checks after the model
(ranges, samplers, the models it serves, its own limits) from one table per server, so the schema
says what this server accepts. Answers are described by the models below, every error answer by
`ErrorResponse`; `finish` makes FastAPI's output true to the server (no 422: those are 400s here).
"""

from typing import Any, Literal

from pydantic import BaseModel, Field
from pydantic.json_schema import models_json_schema

REF = "#/components/schemas/"
BINARY = {"type": "string", "format": "binary"}
JSON = "application/json"


# ----------------------------------------------------------------------------- answers

class ErrorDetail(BaseModel):
    message: str = Field(description="one line naming the problem")
    type: str = Field(description="invalid_request_error (the request's mistake), requests (rate limit) "
                                  "or server_error")
    param: str | None = Field(description="the request field at fault, if one is")
    code: str | None = Field(description="e.g. model_not_found, not_found, invalid_api_key, "
                                         "rate_limit_exceeded, upload_too_large")


class ErrorResponse(BaseModel):
    """OpenAI's error shape: every 4xx answer, and the 503 of a shutdown."""

    error: ErrorDetail


class ImageData(BaseModel):
    url: str | None = Field(None, description="response_format url: GET it (with the API key, if any)")
    b64_json: str | None = Field(None, description="response_format b64_json: the PNG, base64-encoded")


class ImagesResponse(BaseModel):
    """OpenAI's images answer. Every PNG records its parameters (prompt, seed, ...) in its metadata."""

    created: int
    data: list[ImageData]


class ModelCard(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelCard]


class Health(BaseModel):
    status: Literal["ok"]
    model: str = Field(description="the default model")
    models: list[str] = Field(description="the served models, the default first")
    running: bool = Field(description="a job is being drawn")
    waiting: int = Field(description="jobs queued behind it")
    queue_size: int
    max_batch: int = Field(description="images that waiting jobs with the same settings may share passes with")
    jobs: dict[str, int] = Field(description="done, failed, cancelled and rejected jobs since the start")
    batches: dict[str, int] = Field(description="runs of the worker by how many jobs shared them (\"1\": alone)")


class ModelInfo(BaseModel):
    id: str
    image_size: int = Field(description="the size it was trained at")
    sizes: list[str] = Field(description="square sizes it draws (any multiple of its stride up to 4x works)")
    prompts: list[str] = Field(description="a few prompts it knows, from its training captions")


class Config(BaseModel):
    """What the web page builds its form from."""

    model: str = Field(description="the default model")
    models: list[ModelInfo]
    samplers: list[str]
    defaults: dict[str, Any]
    vary_strength: float
    limits: dict[str, int]


class Queued(BaseModel):
    waiting: int = Field(description="jobs ahead of this one")
    seed: int = Field(description="the seed of the first image (image k: seed + k)")


class Recreate(BaseModel):
    command: str | None = Field(description="the one diffuse command that makes the image again (shell-quoted)")
    note: str | None = Field(description="what else it needs (an input image), or why there is none")


class InspectReport(BaseModel):
    """POST /v1/diffuse/inspect's answer: what `diffuse inspect --json` prints for a file."""
    file: str
    format: str | None
    width: int
    height: int
    parameters: dict | None = Field(description="the generation parameters the image records")
    parameters_from: str | None = Field(description="png text, or content credentials")
    a1111_parameters: str | None = Field(description="AUTOMATIC1111's parameters text, if any")
    recreate: Recreate | None
    credentials: dict | None = Field(description="the C2PA claim: valid, trusted, generator, digital source type, "
                                                  "model, model_sha256, parameters, signer, problems, what it proves")
    watermark: dict | None = Field(description="the best reading of the start-noise watermark among the served models: "
                                                "found, model, agree (of signs), p_value, nonce, payload, "
                                                "payload_is_model, read_at, inverted_with, tried")
    watermark_note: str


class StepEvent(BaseModel):
    index: int
    total: int
    sigma: float = Field(description="the noise level of the step's noisy image")
    preview: str = Field(description="the model's current guess of the clean image, as a data: URL (PNG)")
    noisy: str = Field(description="the noisy image the step started from, scaled to the data's range "
                                   "(EDM's c_in), as a data: URL (PNG)")


class StreamImage(ImageData):
    id: str | None = Field(None, description="the image's id (with response_format url): image_id of a next request")
    parameters: dict[str, Any] = Field(description="what the PNG records: prompt, seed, steps, sampler, ...")


class StreamDone(BaseModel):
    created: int
    data: list[StreamImage]


STREAM = {"queued": Queued, "step": StepEvent, "done": StreamDone, "error": ErrorResponse}
STREAM_TEXT = """Server-sent events: `queued`, then one `step` per sampler step with a preview, then `done` with
the images and their parameters, or `error`. Each event's data is JSON (see the answer's schema)."""


def event_stream(events: dict[str, type[BaseModel]]) -> dict:
    """An event stream's content: one event's schema as `itemSchema` (OpenAPI 3.2's way, which
    FastAPI writes too), its `data` the JSON of the model its event name gives."""
    return {"text/event-stream": {"itemSchema": {"oneOf": [
        {"type": "object", "required": ["event", "data"],
         "properties": {"event": {"const": name}, "data": {"type": "string", "contentMediaType": JSON,
                                                           "contentSchema": {"$ref": REF + model.__name__}}}}
        for name, model in events.items()]}}}


# ----------------------------------------------------------------------------- bodies

def body_schema(model: type[BaseModel], checks: dict[str, dict], files: dict[str, bool] | None = None) -> dict:
    """The JSON schema of `model` with what the server checks after it (`checks`: a field's extra
    schema keywords). With `files` (upload name -> required) it is a form's: a form field is absent
    or text, never null, so fields lose their null; uploads are binary."""
    schema = model.model_json_schema()
    form = files is not None
    schema["properties"] = {name: _field(prop, checks.get(name, {}), form)
                            for name, prop in schema["properties"].items()}
    for name, required in (files or {}).items():
        schema["properties"][name] = {**BINARY, "description": "an image file (PNG, JPEG, WebP, ...)"}
        if required:
            schema.setdefault("required", []).append(name)
    return schema


def _field(prop: dict, extra: dict, form: bool) -> dict:
    options = prop.get("anyOf")
    if options is None:
        return {**prop, **extra}
    rest = {k: v for k, v in prop.items() if k != "anyOf"}
    value = [o for o in options if o.get("type") != "null"]
    if form and len(value) == 1:
        if rest.get("default", 0) is None:  # absent: the default
            del rest["default"]
        return {**rest, **value[0], **extra}
    return {**rest, "anyOf": [{**v, **extra} for v in value] + [{"type": "null"}] * (len(value) < len(options))}


def request_body(**content: dict) -> dict:
    """openapi_extra for a route's body: media type (json, form) -> schema."""
    media = {"json": JSON, "form": "multipart/form-data"}
    return {"requestBody": {"required": True, "content": {media[k]: {"schema": s} for k, s in content.items()}}}


# ----------------------------------------------------------------------------- errors

ERRORS = {
    400: "a wrong or missing field (named in `param`), or a request the model cannot draw",
    401: "no valid API key: send Authorization: Bearer KEY",
    404: "no such model (code model_not_found) or image (code not_found)",
    413: "the body or an upload is larger than the server's limit",
    429: "the queue is full: retry after Retry-After seconds",
    503: "the job was cancelled: the server is shutting down",
}


def errors(*codes: int) -> dict:
    """`responses` entries in OpenAI's error shape. Stated as content, not a `model`, because FastAPI
    would file a model under the route's own media type (an event stream, a PNG)."""
    out = {code: {"description": ERRORS[code], "content": {JSON: {"schema": {"$ref": REF + "ErrorResponse"}}}}
           for code in codes}
    if 429 in out:
        out[429]["headers"] = {"Retry-After": {"required": True, "schema": {"type": "integer", "minimum": 1}}}
    return out


def finish(schema: dict, api_key: bool) -> dict:
    """FastAPI's schema made true to the server: FastAPI lists a 422 for its own validation of
    parameters, which the server answers as a 400 in OpenAI's shape; the models referred to by
    `errors` and `event_stream` become components; with an API key every operation needs it, else a 401."""
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    _, defs = models_json_schema([(m, "serialization") for m in (ErrorResponse, *STREAM.values())],
                                 ref_template=REF + "{model}")
    schemas.update(defs["$defs"])
    for path in schema["paths"].values():
        for operation in path.values():
            responses = operation["responses"]
            responses.pop("422", None)
            if api_key:
                responses["401"] = {**errors(401)[401], "headers": {
                    "WWW-Authenticate": {"required": True, "schema": {"type": "string"}}}}
    if api_key:
        components["securitySchemes"] = {"apiKey": {"type": "http", "scheme": "bearer"}}
        schema["security"] = [{"apiKey": []}]
    return schema
