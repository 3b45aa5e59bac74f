"""The published OpenAPI schema (/openapi.json, /docs): derived from the request models, true to
this server's limits, and fuzzed with Schemathesis (a short run of benchmarks/schema_fuzz.py)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from diffuse.pipeline import Pipeline
from diffuse.samplers import SAMPLERS
from diffuse.server import EditFields, GenerationFields, Limits, StreamFields, create_app

ROOT = Path(__file__).resolve().parents[1]
OPERATIONS = {("get", "/healthz"), ("get", "/v1/models"), ("get", "/v1/diffuse/config"), ("get", "/v1/images/{name}"),
              ("post", "/v1/images/generations"), ("post", "/v1/images/edits"), ("post", "/v1/images/variations"),
              ("post", "/v1/diffuse/stream"), ("post", "/v1/diffuse/inspect")}


@pytest.fixture(scope="module")
def pipe(tiny_model_dir):
    return Pipeline.load(tiny_model_dir)


@pytest.fixture(scope="module")
def schema(pipe, tmp_path_factory):
    with TestClient(create_app(pipe, output_dir=tmp_path_factory.mktemp("o"), limits=Limits(n=3, steps=7))) as c:
        r = c.get("/openapi.json")
        assert r.status_code == 200
        return r.json()


def body(schema, path, media="application/json"):
    return schema["paths"][path]["post"]["requestBody"]["content"][media]["schema"]


def test_every_operation_is_published_with_its_body(schema):
    ops = {(m, p) for p, item in schema["paths"].items() for m in item}
    assert ops == OPERATIONS  # the page, the docs and the schema itself are left out
    gen = body(schema, "/v1/images/generations")
    assert set(gen["properties"]) == set(GenerationFields.model_fields)  # derived from the model the route uses
    assert gen["required"] == ["prompt"] and gen["additionalProperties"] is False  # unknown fields are refused
    edit = body(schema, "/v1/images/edits", "multipart/form-data")
    assert set(edit["properties"]) == set(EditFields.model_fields) | {"image", "mask"}
    assert edit["properties"]["image"] == {"type": "string", "format": "binary", "description": edit["properties"]["image"]["description"]}
    assert sorted(edit["required"]) == ["image", "prompt"]
    assert edit["properties"]["n"]["type"] == "integer"  # a form field is text or absent: never null
    variation = body(schema, "/v1/images/variations", "multipart/form-data")
    assert variation["required"] == ["image"]  # OpenAI sends no prompt
    stream = schema["paths"]["/v1/diffuse/stream"]["post"]["requestBody"]["content"]
    assert set(stream) == {"application/json", "multipart/form-data"}
    assert set(stream["application/json"]["schema"]["properties"]) == set(StreamFields.model_fields)


def test_the_schema_states_what_this_server_checks(schema, pipe):
    gen = body(schema, "/v1/images/generations")["properties"]
    value = lambda name: next(o for o in gen[name]["anyOf"] if o["type"] != "null")
    assert (value("n")["minimum"], value("n")["maximum"]) == (1, 3)  # this server's limits
    assert value("steps")["maximum"] == 7 and value("seed")["maximum"] == 2 ** 32 - 1
    assert value("sampler")["enum"] == list(SAMPLERS) and value("model")["enum"] == [pipe.name]
    assert gen["response_format"]["enum"] == ["url", "b64_json"]
    assert value("guidance")["maximum"] == 100 and {"type": "null"} in gen["seed"]["anyOf"]  # null: the default
    size = re.compile(value("size")["pattern"])  # the sizes the model draws: sides a multiple of its stride
    stride = pipe.model.unet_cfg.stride
    assert size.fullmatch("auto") and size.fullmatch("32x128") and size.fullmatch(f"{stride}x{3 * stride}")
    assert not any(size.fullmatch(s) for s in ("132x32", f"{stride + 1}x32", "0032x32", "32x32 ", "32X32"))


def test_answers_and_errors_are_documented(schema):
    components = schema["components"]["schemas"]
    assert components["ErrorDetail"]["required"] == ["message", "type", "param", "code"]
    for (method, path) in OPERATIONS:
        responses = schema["paths"][path][method]["responses"]
        assert "422" not in responses  # FastAPI's own validation errors are answered as 400s
        if method == "post":
            for code in ("400", "413") if path.endswith("/inspect") else ("400", "404", "413", "429"):  # inspect runs no job
                assert responses[code]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorResponse"}
    assert "Retry-After" in schema["paths"]["/v1/images/generations"]["post"]["responses"]["429"]["headers"]
    image = schema["paths"]["/v1/images/{name}"]["get"]["responses"]["200"]["content"]
    assert set(image) == {"image/png"}
    events = schema["paths"]["/v1/diffuse/stream"]["post"]["responses"]["200"]["content"]
    assert set(events) == {"text/event-stream"} and "schema" not in events["text/event-stream"]
    names = [e["properties"]["event"]["const"] for e in events["text/event-stream"]["itemSchema"]["oneOf"]]
    assert names == ["queued", "step", "done", "error"] and "security" not in schema  # no key on this server


def test_docs_need_no_cdn_and_the_key_is_documented(pipe, tmp_path):
    with TestClient(create_app(pipe, output_dir=tmp_path, api_key="s3cret")) as c:
        page = c.get("/docs")  # the docs and the schema are public, as the page is
        assert page.status_code == 200 and "http" not in page.text.replace("http-equiv", "")
        assert c.get("/docs/files/swagger-ui-bundle.js").status_code == 200
        assert c.get("/docs/files/swagger-ui.css").status_code == 200
        schema = c.get("/openapi.json").json()
        assert schema["security"] == [{"apiKey": []}]
        assert schema["components"]["securitySchemes"]["apiKey"] == {"type": "http", "scheme": "bearer"}
        assert all("401" in op["responses"] for item in schema["paths"].values() for op in item.values())
        assert c.get("/v1/models").status_code == 401 and c.get("/docs/files/../../server.py").status_code in (401, 404)


def test_a_short_schema_fuzz_finds_nothing(tiny_model_dir, tmp_path):
    """benchmarks/schema_fuzz.py's run, shortened: every operation, no 5xx, no answer off the schema."""
    out = tmp_path / "figures.json"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "schema_fuzz.py"), "--model", str(tiny_model_dir),
                          "--examples", "3", "--phases", "coverage,fuzzing", "--json", str(out)],
                         capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-5000:]
    figures = json.loads(out.read_text())
    assert figures["server_errors"] == 0 and not figures["failed"]
    assert figures["requests"] >= 300
    assert {(m.lower(), p) for m, p in (op.split(" ", 1) for op in figures["operations"])} >= OPERATIONS
    assert figures["operations"]["POST /v1/images/generations"].get("200")  # valid requests are drawn
