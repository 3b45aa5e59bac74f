"""The HTTP server: OpenAI's Images API (with the official client), the stream, the queue,
cancellation, the API key, and every bad input answered with OpenAI's 4xx error shape."""

import base64
import io
import json
import threading
import time

import httpx
import openai
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from conftest import HeldPipeline, live_server
from diffuse.cli import main
from diffuse.errors import DiffuseError
from diffuse.pipeline import Pipeline
from diffuse.server import Limits, create_app

FAST = {"steps": 2, "seed": 1}


@pytest.fixture(scope="module")
def pipe(tiny_model_dir):
    return Pipeline.load(tiny_model_dir)


@pytest.fixture(scope="module")
def client(pipe, tmp_path_factory):
    with TestClient(create_app(pipe, output_dir=tmp_path_factory.mktemp("served"))) as c:
        yield c


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def half_transparent(size=32) -> Image.Image:
    """Red, with its left half fully transparent (OpenAI: the area to edit)."""
    img = Image.new("RGBA", (size, size), (200, 30, 30, 255))
    img.paste((0, 0, 0, 0), (0, 0, size // 2, size))
    return img


def params(png_bytes: bytes) -> dict:
    return json.loads(Image.open(io.BytesIO(png_bytes)).text["diffuse"])


def wait_for(condition, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def health(base, **kw):
    return httpx.get(f"{base}/healthz", **kw).json()


# ----------------------------------------------------------------------------- the API

def test_generations_answer_urls_and_base64(client):
    r = client.post("/v1/images/generations", json={"prompt": "a red circle", "n": 2, "size": "32x32", **FAST})
    assert r.status_code == 200 and isinstance(r.json()["created"], int)
    urls = [d["url"] for d in r.json()["data"]]
    assert len(urls) == 2 and all(u.startswith("http://testserver/v1/images/") for u in urls)
    kept = [client.get(u) for u in urls]
    assert all(k.status_code == 200 and k.headers["content-type"] == "image/png" for k in kept)
    assert [params(k.content)["seed"] for k in kept] == [1, 2]  # image k gets seed + k, recorded in the PNG
    assert params(kept[0].content)["prompt"] == "a red circle" and params(kept[0].content)["steps"] == 2

    r = client.post("/v1/images/generations", json={"prompt": "a red circle", "response_format": "b64_json",
                                                    "size": "64x32", **FAST})
    data = base64.b64decode(r.json()["data"][0]["b64_json"])
    assert Image.open(io.BytesIO(data)).size == (64, 32)
    same = client.post("/v1/images/generations", json={"prompt": "a red circle", "response_format": "b64_json",
                                                       "size": "64x32", **FAST})
    assert same.json()["data"][0]["b64_json"] == r.json()["data"][0]["b64_json"]  # a seed makes it again


def test_edits_follow_openai_transparency(client):
    src = Image.new("RGB", (32, 32), (200, 30, 30))
    mask = half_transparent()
    r = client.post("/v1/images/edits", files={"image": ("i.png", png(src)), "mask": ("m.png", png(mask))},
                    data={"prompt": "a blue star", "response_format": "b64_json", **FAST})
    out = base64.b64decode(r.json()["data"][0]["b64_json"])
    img = Image.open(io.BytesIO(out)).convert("RGB")
    assert params(out)["mode"] == "inpaint" and params(out)["sampler"] == "euler_ancestral"  # inpainting's default
    assert img.crop((16, 0, 32, 32)).tobytes() == src.crop((16, 0, 32, 32)).tobytes()  # opaque half kept exactly
    assert img.crop((0, 0, 16, 32)).tobytes() != src.crop((0, 0, 16, 32)).tobytes()

    # No mask: the image's own transparent pixels are the area to edit.
    r = client.post("/v1/images/edits", files={"image": ("i.png", png(half_transparent()))},
                    data={"prompt": "a blue star", "response_format": "b64_json", **FAST})
    out = base64.b64decode(r.json()["data"][0]["b64_json"])
    assert params(out)["mode"] == "inpaint"
    assert Image.open(io.BytesIO(out)).convert("RGB").crop((16, 0, 32, 32)).tobytes() == src.crop((16, 0, 32, 32)).tobytes()

    # Neither has transparency: image-to-image at the default strength, or the one given.
    r = client.post("/v1/images/edits", files={"image": ("i.png", png(src))},
                    data={"prompt": "a blue star", "strength": "0.5", "response_format": "b64_json", "steps": "4"})
    meta = params(base64.b64decode(r.json()["data"][0]["b64_json"]))
    assert meta["mode"] == "img2img" and meta["strength"] == 0.5 and meta["steps_run"] == 2


def test_variations_use_the_recorded_prompt(client):
    made = client.post("/v1/images/generations", json={"prompt": "a green square", **FAST}).json()["data"][0]["url"]
    r = client.post("/v1/images/variations", files={"image": ("v.png", client.get(made).content)},
                    data={"n": "2", "response_format": "b64_json", "steps": "5"})
    metas = [params(base64.b64decode(d["b64_json"])) for d in r.json()["data"]]
    assert [m["prompt"] for m in metas] == ["a green square"] * 2
    assert metas[0]["strength"] == 0.4 and metas[0]["steps_run"] == 2 and metas[1]["seed"] == metas[0]["seed"] + 1
    plain = client.post("/v1/images/variations", files={"image": ("v.png", png(Image.new("RGB", (32, 32))))},
                        data={"response_format": "b64_json", **FAST})
    assert params(base64.b64decode(plain.json()["data"][0]["b64_json"]))["prompt"] == ""  # unconditional


def read_events(response) -> list[tuple[str, dict]]:
    events, name = [], None
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            events.append((name, json.loads(line[6:])))
    return events


def test_stream_reports_every_step_then_the_images(client):
    with client.stream("POST", "/v1/diffuse/stream", json={"prompt": "a red circle", "steps": 4, "n": 2}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = read_events(r)
    names = [e for e, _ in events]
    assert names == ["queued", "step", "step", "step", "step", "done"]
    steps = [d for e, d in events if e == "step"]
    assert [s["index"] for s in steps] == [0, 1, 2, 3] and all(s["total"] == 4 for s in steps)
    assert all(a["sigma"] > b["sigma"] for a, b in zip(steps, steps[1:]))
    preview = Image.open(io.BytesIO(base64.b64decode(steps[0]["preview"].split(",", 1)[1])))
    assert preview.size == (32, 32)
    shown = json.loads(preview.text["diffuse"])  # a preview says what it shows and what made it
    assert shown["picture"] == "preview" and shown["step"] == 0 and shown["shows"] == "denoised"
    assert shown["images"][0]["seed"] == events[0][1]["seed"] and shown["images"][0]["prompt"] == "a red circle"
    # the noisy image each step starts from: static at first (sigma 80), nearly the result at the end
    noisy = [np.asarray(Image.open(io.BytesIO(base64.b64decode(s["noisy"].split(",", 1)[1]))), float) for s in steps]
    guess = [np.asarray(Image.open(io.BytesIO(base64.b64decode(s["preview"].split(",", 1)[1]))), float) for s in steps]
    gaps = [np.abs(n - g).mean() for n, g in zip(noisy, guess)]
    assert noisy[0].shape == (32, 32, 3) and gaps[0] > 2 * gaps[-1]
    done = events[-1][1]["data"]
    assert done[0]["parameters"]["seed"] == events[0][1]["seed"] and done[1]["parameters"]["prompt"] == "a red circle"

    # Variations of a kept image by its id, and inpainting from a form upload, stream the same way.
    with client.stream("POST", "/v1/diffuse/stream", data={"image_id": done[0]["id"], "variations": "true",
                                                            "steps": "5"}) as r:
        varied = read_events(r)[-1]
    assert varied[0] == "done" and varied[1]["data"][0]["parameters"]["prompt"] == "a red circle"
    assert varied[1]["data"][0]["parameters"]["strength"] == 0.4
    with client.stream("POST", "/v1/diffuse/stream", data={"prompt": "a star", **FAST},
                       files={"image": ("i.png", png(Image.new("RGB", (32, 32)))),
                              "mask": ("m.png", png(half_transparent()))}) as r:
        inpainted = read_events(r)[-1]
    assert inpainted[1]["data"][0]["parameters"]["mode"] == "inpaint"


def test_models_health_config_and_page(client, pipe):
    assert [m["id"] for m in client.get("/v1/models").json()["data"]] == [pipe.name]
    h = client.get("/healthz").json()
    assert h["status"] == "ok" and h["running"] is False and h["jobs"]["failed"] == 0
    config = client.get("/v1/diffuse/config").json()
    assert config["samplers"][0] == "euler"
    assert (config["defaults"]["sampler"], config["defaults"]["inpaint_sampler"]) == ("dpmpp_2m", "euler_ancestral")
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert "EventSource" not in client.get("/static/app.js").text and client.get("/static/style.css").status_code == 200


# ----------------------------------------------------------------------------- several models

@pytest.fixture(scope="module")
def two(pipe, tmp_path_factory):
    """The tiny model served twice: as itself (the default) and as "tiny-b", whose checkpoint
    records example prompts of its own."""
    other = Pipeline(pipe.model, pipe.model_hash, "tiny-b", {**pipe.config, "data": {"prompts": ["a blue star"]}})
    with TestClient(create_app([pipe, other], output_dir=tmp_path_factory.mktemp("two"))) as c:
        yield c


def drawn_by(r) -> list[str]:
    return [params(base64.b64decode(d["b64_json"]))["model"] for d in r.json()["data"]]


def test_each_request_is_drawn_by_the_model_it_names(two, pipe):
    assert [m["id"] for m in two.get("/v1/models").json()["data"]] == [pipe.name, "tiny-b"]
    b64 = {"response_format": "b64_json", **FAST}
    assert drawn_by(two.post("/v1/images/generations", json={"prompt": "x", **b64})) == [pipe.name]  # the first
    assert drawn_by(two.post("/v1/images/generations", json={"prompt": "x", "model": "tiny-b", **b64})) == ["tiny-b"]
    assert drawn_by(two.post("/v1/images/generations", json={"prompt": "x", "model": pipe.name, **b64})) == [pipe.name]
    r = two.post("/v1/images/edits", files={"image": ("i.png", png(half_transparent()))},
                 data={"prompt": "x", "model": "tiny-b", **b64})
    assert drawn_by(r) == ["tiny-b"]
    with two.stream("POST", "/v1/diffuse/stream", json={"prompt": "x", "model": "tiny-b", **FAST}) as r:
        assert read_events(r)[-1][1]["data"][0]["parameters"]["model"] == "tiny-b"
    r = two.post("/v1/images/generations", json={"prompt": "x", "model": "emoji"})
    err = r.json()["error"]
    assert r.status_code == 404 and err["code"] == "model_not_found" and f"'{pipe.name}', 'tiny-b'" in err["message"]
    assert two.get("/healthz").json()["jobs"] == {"done": 5, "failed": 0, "cancelled": 0, "rejected": 0}  # one worker


def test_config_describes_each_model_for_the_page(two, pipe):
    config = two.get("/v1/diffuse/config").json()
    first, second = config["models"]
    assert config["model"] == pipe.name and (first["id"], second["id"]) == (pipe.name, "tiny-b")
    assert first["image_size"] == 32 and first["sizes"] == ["32x32", "64x64", "96x96", "128x128"]
    assert second["prompts"] == ["a blue star"]  # what its checkpoint records
    assert len(first["prompts"]) == 6 and all(p.endswith("background") for p in first["prompts"])  # drawn as shapes' are
    assert two.get("/healthz").json()["models"] == [pipe.name, "tiny-b"]
    body = two.get("/openapi.json").json()["paths"]["/v1/images/generations"]["post"]["requestBody"]
    model = body["content"]["application/json"]["schema"]["properties"]["model"]["anyOf"][0]
    assert model["enum"] == [pipe.name, "tiny-b"]  # the schema names the models a request may ask for


def test_models_need_names_of_their_own(pipe, tiny_model_dir, tmp_path, capsys):
    with pytest.raises(DiffuseError, match="two models are named"):
        create_app([pipe, pipe], output_dir=tmp_path)
    assert main(["serve", "--model", str(tiny_model_dir), "--model", str(tiny_model_dir)]) == 2
    assert "two models are named" in capsys.readouterr().err


def test_serve_loads_every_bundled_model_unless_told_which():
    from diffuse.checkpoint import BUNDLED_MODELS
    from diffuse.cli import serve_models
    assert serve_models(None) == [str(BUNDLED_MODELS[m]) for m in ("shapes", "emoji", "shapes-fast")]
    assert serve_models(["emoji", "runs/x"]) == [str(BUNDLED_MODELS["emoji"]), "runs/x"]


# ----------------------------------------------------------------------------- bad input

def upload(name="image", data=b"", **fields):
    return {"files": {name: ("x.png", data)}, "data": fields}


BAD = [  # (path, request keywords, status, text in the message, param)
    ("/v1/images/generations", {"content": b'{"prompt": "x",', "headers": {"content-type": "application/json"}},
     400, "not valid JSON", None),
    ("/v1/images/generations", {"json": ["a red circle"]}, 400, "JSON object", None),
    ("/v1/images/generations", {"json": {"n": 2}}, 400, "prompt", "prompt"),
    ("/v1/images/generations", {"json": {"prompt": 5}}, 400, "valid string", "prompt"),
    ("/v1/images/generations", {"json": {"prompt": "x", "n": "2"}}, 400, "valid integer", "n"),
    ("/v1/images/generations", {"json": {"prompt": "x", "guidance": "high"}}, 400, "valid number", "guidance"),
    ("/v1/images/generations", {"json": {"prompt": "x", "n": 0}}, 400, "n must be from 1 to 10", "n"),
    ("/v1/images/generations", {"json": {"prompt": "x", "n": 1000}}, 400, "n must be from 1 to 10", "n"),
    ("/v1/images/generations", {"json": {"prompt": "x", "steps": 10 ** 6}}, 400, "steps must be from 1 to 100", "steps"),
    ("/v1/images/generations", {"json": {"prompt": "x", "size": "4096x4096"}}, 400, "width 4096 is not possible", None),
    ("/v1/images/generations", {"json": {"prompt": "x", "size": "100000000x100000000"}}, 400, "not possible", None),
    ("/v1/images/generations", {"json": {"prompt": "x", "size": "9" * 5000 + "x32"}}, 400, "WIDTHxHEIGHT", "size"),
    ("/v1/images/generations", {"json": {"prompt": "x", "size": "large"}}, 400, "WIDTHxHEIGHT", "size"),
    ("/v1/images/generations", {"json": {"prompt": "x", "sampler": "magic"}}, 400, "unknown sampler", None),
    ("/v1/images/generations", {"json": {"prompt": "x", "seed": 2 ** 64}}, 400, "seed must be an integer from 0 to 2^32 - 1", None),
    ("/v1/images/edits", upload(data=png(Image.new("RGB", (32, 32))), prompt="x", seed=str(2 ** 70)), 400,
     "seed must be an integer from 0 to 2^32 - 1", None),
    ("/v1/images/generations", {"json": {"prompt": "x", "response_format": "gif"}}, 400, "url", "response_format"),
    ("/v1/images/generations", {"json": {"prompt": "x", "stpes": 3}}, 400, "unrecognized", "stpes"),
    ("/v1/images/generations", {"json": {"prompt": "x", "model": "dall-e-3"}}, 404, "does not exist", "model"),
    ("/v1/images/edits", {"json": {"prompt": "x"}}, 400, "multipart/form-data", None),
    ("/v1/images/edits", {"data": {"prompt": "x"}}, 400, "image file is required", "image"),
    ("/v1/images/edits", upload(data=b"%PDF-1.4 not an image", prompt="x"), 400, "not a readable image", "image"),
    ("/v1/images/edits", {"files": {"image": ("i.png", png(Image.new("RGB", (32, 32)))),
                                    "mask": ("m.png", png(Image.new("L", (16, 16))))}, "data": {"prompt": "x"}},
     400, "mask is 16x16 but the image is 32x32", None),
    ("/v1/images/edits", upload(data=png(Image.new("RGB", (33, 32))), prompt="x"), 400, "width 33", None),
    ("/v1/images/variations", upload(data=png(Image.new("RGB", (32, 32))), n="many"), 400, "valid integer", "n"),
    ("/v1/diffuse/stream", {"json": {"image_id": "../../etc/passwd", "variations": True}}, 400, "32 hex digits",
     "image_id"),
    ("/v1/diffuse/stream", {"json": {"image_id": "0" * 32, "variations": True}}, 404, "no image", "image_id"),
    ("/v1/diffuse/stream", {"json": {"variations": True}}, 400, "need an image", "image"),
    # Found while fuzzing from the schema (issue 24): each was a 500, or silently ignored.
    ("/v1/images/generations", {"content": b'{"prompt": "\\ud800 a"}', "headers": {"content-type": "application/json"}},
     400, "not valid Unicode", "prompt"),
    ("/v1/diffuse/stream", {"content": b'{"prompt": "x", "\\udfff": 1}', "headers": {"content-type": "application/json"}},
     400, "a field name: not valid Unicode", None),
    ("/v1/images/generations", {"content": b"[" * 50_000 + b"]" * 50_000, "headers": {"content-type": "application/json"}},
     400, "nested too deeply", None),
    ("/v1/images/edits", {"files": {"image": ("i.png", png(Image.new("RGB", (32, 32)))), "extra": ("e.png", b"x")},
                          "data": {"prompt": "x"}}, 400, "unrecognized request argument", "extra"),
    ("/v1/images/variations", {"files": {"image": ("i.png", png(Image.new("RGB", (32, 32)))),
                                         "mask": ("m.png", png(half_transparent()))}}, 400, "unrecognized", "mask"),
    ("/v1/images/edits", upload(name="mask", data=png(half_transparent()), prompt="x", image="i.png"), 400,
     "send an image file", "image"),
    ("/v1/images/generations", {"json": {"prompt": "x", "size": "\u0663\u0662x\u0663\u0662"}}, 400, "WIDTHxHEIGHT", "size"),
    ("/v1/images/generations", {"json": {"prompt": "x", "size": "0032x32"}}, 400, "WIDTHxHEIGHT", "size"),
]


@pytest.mark.parametrize("path,kw,status,text,param", BAD, ids=[f"{b[0].rsplit('/', 1)[1]}-{k}" for k, b in enumerate(BAD)])
def test_bad_input_gets_a_4xx_in_openai_shape(client, path, kw, status, text, param):
    before = client.get("/healthz").json()["jobs"]
    r = client.post(path, **kw)
    err = r.json()["error"]
    assert r.status_code == status and text in err["message"], (r.status_code, err)
    assert err["param"] == param and err["type"] == "invalid_request_error" and set(err) == {"message", "type", "param", "code"}
    assert client.get("/healthz").json()["jobs"] == before  # refused before any job was queued


@pytest.mark.parametrize("path", ["/v1/images/..%2F..%2Fetc%2Fpasswd", "/v1/images/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
                                  "/v1/images/..%5C..%5Cetc%5Cpasswd", "/v1/images/..", "/v1/images/passwd",
                                  "/v1/images/" + "0" * 32 + ".png", "/v1/images/../../etc/passwd", "/v1/nothing",
                                  "/static/..%2F..%2Fserver.py", "/static/%2e%2e/%2e%2e/etc/passwd"])
def test_image_ids_cannot_leave_the_output_folder(client, path):
    r = client.get(path)
    assert r.status_code == 404 and "root:" not in r.text and r.json()["error"]["code"] == "not_found"


def test_wrong_method_and_the_server_keeps_serving(client):
    r = client.put("/v1/images/generations", json={"prompt": "x"})
    assert r.status_code == 405 and "error" in r.json()
    assert client.post("/v1/images/generations", json={"prompt": "x", **FAST}).status_code == 200


def test_fastapi_validation_errors_become_400s(pipe, tmp_path):
    app = create_app(pipe, output_dir=tmp_path)

    @app.get("/v1/typed")  # a route with typed parameters, as later endpoints may have
    async def typed(k: int):
        return {"k": k}
    with TestClient(app) as c:
        r = c.get("/v1/typed", params={"k": "x"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "query.k"
        assert "valid integer" in r.json()["error"]["message"]


def test_upload_limits(pipe, tmp_path):
    app = create_app(pipe, output_dir=tmp_path, limits=Limits(upload_bytes=4000, upload_pixels=48 * 48))
    with TestClient(app) as c:
        noisy = Image.effect_noise((48, 48), 60).convert("RGB")  # incompressible: > 4,000 bytes as PNG
        r = c.post("/v1/images/edits", **upload(data=png(noisy), prompt="x"))
        assert r.status_code == 413 and r.json()["error"]["param"] == "image"
        r = c.post("/v1/images/edits", **upload(data=png(Image.new("RGB", (64, 64))), prompt="x"))
        assert r.status_code == 400 and "at most 2304 pixels" in r.json()["error"]["message"]
        r = c.post("/v1/images/generations", content=b" " * 100_000, headers={"content-type": "application/json"})
        assert r.status_code == 413 and "larger than" in r.json()["error"]["message"]

        def chunks():  # no Content-Length: the body is counted as it arrives
            for _ in range(100):  # the limit: 2 x 4,000 + 64 KiB
                yield b" " * 1000
        r = c.post("/v1/images/generations", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413
        assert c.post("/v1/images/generations", json={"prompt": "x", **FAST}).status_code == 200


def test_api_key_guards_every_endpoint(pipe, tmp_path):
    with TestClient(create_app(pipe, output_dir=tmp_path, api_key="s3cret")) as c:
        for method, path in [("GET", "/healthz"), ("GET", "/v1/models"), ("GET", "/v1/diffuse/config"),
                             ("GET", "/v1/images/" + "0" * 32 + ".png"), ("POST", "/v1/images/generations"),
                             ("POST", "/v1/images/edits"), ("POST", "/v1/images/variations"),
                             ("POST", "/v1/diffuse/stream")]:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
                r = c.request(method, path, headers=headers)
                assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key", (path, headers)
        key = {"Authorization": "Bearer s3cret"}
        assert c.get("/v1/models", headers=key).status_code == 200
        url = c.post("/v1/images/generations", json={"prompt": "x", **FAST}, headers=key).json()["data"][0]["url"]
        assert c.get(url).status_code == 401 and c.get(url, headers=key).status_code == 200
        assert c.get("/").status_code == 200 and c.get("/static/app.js").status_code == 200  # the page asks for the key


# ----------------------------------------------------------------------------- load: queue and cancellation

def test_full_queue_answers_429_with_retry_after(pipe, tmp_path):
    held = HeldPipeline(pipe)
    held.gate.clear()
    with live_server(create_app(held, output_dir=tmp_path, queue_size=1)) as base:
        results = {}

        def post(name):
            results[name] = httpx.post(f"{base}/v1/images/generations", json={"prompt": "x", **FAST}, timeout=60)
        first = threading.Thread(target=post, args=("first",))
        first.start()
        wait_for(lambda: health(base)["running"])
        second = threading.Thread(target=post, args=("second",))
        second.start()
        wait_for(lambda: health(base)["waiting"] == 1)
        r = httpx.post(f"{base}/v1/images/generations", json={"prompt": "x", **FAST})
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
        assert r.json()["error"]["code"] == "rate_limit_exceeded"
        held.gate.set()
        first.join(60), second.join(60)
        assert results["first"].status_code == results["second"].status_code == 200
        assert health(base)["jobs"] == {"done": 2, "failed": 0, "cancelled": 0, "rejected": 1}


def test_a_client_that_disconnects_cancels_its_job(pipe, tmp_path):
    held = HeldPipeline(pipe, delay=0.2)  # 50 steps: 10 s unless cancelled
    with live_server(create_app(held, output_dir=tmp_path)) as base:
        with httpx.stream("POST", f"{base}/v1/diffuse/stream", json={"prompt": "x", "steps": 50}, timeout=30) as r:
            lines = r.iter_lines()
            assert next(line for line in lines if line.startswith("event: step"))
        start = time.monotonic()  # the stream is closed: the job stops at its next step
        wait_for(lambda: health(base)["jobs"]["cancelled"] == 1 and not health(base)["running"])
        assert time.monotonic() - start < 5

        # The same for a plain request whose client gives up waiting.
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{base}/v1/images/generations", json={"prompt": "x", "steps": 50}, timeout=1.0)
        wait_for(lambda: health(base)["jobs"]["cancelled"] == 2 and not health(base)["running"], timeout=5)
        held.delay = 0
        r = httpx.post(f"{base}/v1/images/generations", json={"prompt": "x", **FAST}, timeout=30)
        assert r.status_code == 200 and health(base)["jobs"]["done"] == 1  # the worker is free


# ----------------------------------------------------------------------------- the official client

@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")  # OpenAI deprecates variations; we serve them
def test_openai_client_against_a_live_server(pipe, tmp_path):
    with live_server(create_app(pipe, output_dir=tmp_path, api_key="k")) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="k", max_retries=0)
        extra = {"extra_body": {"steps": 2, "seed": 3}}
        r = client.images.generate(prompt="a red circle", n=2, size="32x32", response_format="b64_json", **extra)
        assert len(r.data) == 2 and Image.open(io.BytesIO(base64.b64decode(r.data[1].b64_json))).size == (32, 32)
        r = client.images.generate(prompt="a red circle", model=pipe.name, response_format="url", **extra)
        kept = httpx.get(r.data[0].url, headers={"Authorization": "Bearer k"})
        assert params(kept.content)["seed"] == 3

        r = client.images.edit(image=("i.png", png(Image.new("RGB", (32, 32)))), mask=("m.png", png(half_transparent())),
                               prompt="a blue star", n=1, size="32x32", response_format="b64_json", **extra)
        assert params(base64.b64decode(r.data[0].b64_json))["mode"] == "inpaint"
        r = client.images.create_variation(image=("v.png", kept.content), n=2, size="32x32",
                                           response_format="b64_json", **extra)
        assert [params(base64.b64decode(d.b64_json))["prompt"] for d in r.data] == ["a red circle"] * 2

        with pytest.raises(openai.BadRequestError, match="n must be from 1 to 10"):
            client.images.generate(prompt="x", n=1000, **extra)
        with pytest.raises(openai.BadRequestError, match="width 4096 is not possible"):
            client.images.generate(prompt="x", size="4096x4096", **extra)
        with pytest.raises(openai.NotFoundError, match="does not exist"):
            client.images.generate(prompt="x", model="dall-e-3")
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{base}/v1", api_key="wrong", max_retries=0).images.generate(prompt="x")
        assert client.models.list().data[0].id == pipe.name


def test_serve_command_bad_input_is_one_line(tmp_path, capsys):
    assert main(["serve", "--model", str(tmp_path / "none")]) == 2
    assert main(["serve", "--model", str(tmp_path / "none"), "--queue-size", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "does not exist" in err[0] and "--queue-size must be above 0" in err[1]


def test_the_output_folder_keeps_the_newest_images_only(pipe, tmp_path):
    """--keep N / --keep-mb: answered images beyond the limit are removed oldest first, and the
    URLs of the kept ones still answer."""
    with TestClient(create_app(pipe, output_dir=tmp_path, limits=Limits(keep=3))) as c:
        urls = []
        for seed in range(5):
            r = c.post("/v1/images/generations", json={"prompt": "a red circle", "steps": 2, "seed": seed})
            urls.append(r.json()["data"][0]["url"])
        assert len(list(tmp_path.glob("*.png"))) == 3
        assert [c.get(u).status_code for u in urls] == [404, 404, 200, 200, 200]


def test_prune_outputs_by_bytes_spares_the_newest(tmp_path):
    import os
    from diffuse.server import prune_outputs
    for k in range(4):
        (tmp_path / f"{k}.png").write_bytes(b"x" * 100)
        os.utime(tmp_path / f"{k}.png", ns=(k * 10 ** 9, k * 10 ** 9))
    assert sorted(p.name for p in prune_outputs(tmp_path, keep=0, keep_bytes=250)) == ["0.png", "1.png"]
    assert prune_outputs(tmp_path, keep=0, keep_bytes=10, spare=tmp_path / "3.png") == [tmp_path / "2.png"]
    assert [p.name for p in tmp_path.iterdir()] == ["3.png"] and prune_outputs(tmp_path, 0, 0) == []


def test_with_credentials_every_answered_image_carries_a_valid_signed_claim(pipe, tmp_path):
    import base64
    from diffuse.credentials import TRAINED, load_credentials, read_claim
    app = create_app(pipe, output_dir=tmp_path / "served", credentials=load_credentials())
    with TestClient(app) as c:
        b64 = c.post("/v1/images/generations", json={"prompt": "a red circle", "steps": 2, "seed": 4,
                                                    "response_format": "b64_json"}).json()["data"][0]["b64_json"]
        url = c.post("/v1/images/generations", json={"prompt": "a red circle", "steps": 2, "seed": 4}).json()["data"][0]["url"]
        kept = c.get(url).content
    for png in (base64.b64decode(b64), kept):
        claim = read_claim(png)
        assert claim.valid and TRAINED.endswith(claim.digital_source_type) and claim.parameters["seed"] == 4
        assert claim.model_sha256 == pipe.config["weights_sha256"]


def test_inspect_reports_what_an_uploaded_image_records(pipe, tmp_path):
    import base64
    from diffuse.credentials import load_credentials
    app = create_app(pipe, output_dir=tmp_path / "served", credentials=load_credentials())
    with TestClient(app) as c:
        png = base64.b64decode(c.post("/v1/images/generations", json={"prompt": "a red circle", "steps": 2, "seed": 9,
                                                                      "response_format": "b64_json"}).json()["data"][0]["b64_json"])
        report = c.post("/v1/diffuse/inspect", files={"image": ("made.png", png, "image/png")}).json()
        assert report["file"] == "made.png" and report["parameters"]["seed"] == 9
        assert report["recreate"]["command"].startswith("diffuse generate 'a red circle' ")
        assert report["credentials"]["valid"] and report["credentials"]["model_sha256"] == pipe.config["weights_sha256"]
        plain = io.BytesIO()
        Image.new("RGB", (8, 8)).save(plain, "PNG")
        bare = c.post("/v1/diffuse/inspect", files={"image": ("photo.png", plain.getvalue(), "image/png")}).json()
        assert bare["parameters"] is None and bare["credentials"] is None
        bad = c.post("/v1/diffuse/inspect", files={"image": ("x.png", b"not an image", "image/png")})
        assert bad.status_code == 400 and "is not an image" in bad.json()["error"]["message"]
        assert c.post("/v1/diffuse/inspect", data={"prompt": "x"}).status_code == 400
        assert "/v1/diffuse/inspect" in c.get("/openapi.json").json()["paths"]
