"""The web service: every endpoint and every error through FastAPI's TestClient, random requests over the
OpenAPI schema never get a 5xx, concurrent requests are micro-batched, and a real browser classifies a photo."""
from __future__ import annotations

import base64
import io
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image

from imgclf.deploy.export import export
from imgclf.deploy.guards import Limits
from imgclf.deploy.serve import create_app
from imgclf.inference.onnx import OnnxClassifier
from imgclf.training.job import train

from .conftest import TINY, headless_chrome, make_image, write_class_folders

# Korean class names (bar, bright, dark) so every answer and the web page are checked with non-Latin labels.
KO = {"bar": "막대", "bright": "밝음", "dark": "어두움"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    data = write_class_folders(root / "data", 16, classes=tuple(KO.values()))
    return train(str(data), epochs=3, project=str(root / "runs"), name="s", **TINY)


@pytest.fixture(scope="module")
def client(run):
    app = create_app(run, Limits(max_upload_bytes=200_000, max_pixels=1_000_000, max_files=4))
    with TestClient(app, base_url="http://localhost") as c:
        yield c


def png(kind: str = "bright", seed: int = 0, size: int = 16) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(make_image(kind, np.random.default_rng(seed), size)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_predict_multipart_and_json(client):
    r = client.post("/predict", files=[("files", ("a.png", png("bright"))), ("files", ("b.jpg", png("bar")))])
    assert r.status_code == 200, r.text
    body = r.json()
    assert [p["top"][0]["label"] for p in body["predictions"]] == [KO["bright"], KO["bar"]]
    assert len(body["predictions"][0]["top"]) == 3 and body["time_ms"] > 0
    assert abs(sum(t["probability"] for t in body["predictions"][0]["top"]) - 1) < 1e-3
    r = client.post("/predict?top_k=1", json={"images": [base64.b64encode(png("dark")).decode()]})
    assert r.status_code == 200 and r.json()["predictions"][0]["top"][0]["label"] == KO["dark"]
    assert len(r.json()["predictions"][0]["top"]) == 1
    # The content decides, not the name or the declared type: a PNG called .txt and sent as text/plain works.
    r = client.post("/predict", files={"files": ("notes.txt", png("bar"), "text/plain")})
    assert r.status_code == 200 and r.json()["predictions"][0]["top"][0]["label"] == KO["bar"]


def test_gradcam_labels_metadata_health_page_docs(client):
    r = client.post("/predict?gradcam=true", files={"files": ("a.png", png("bright"))})
    overlay = Image.open(io.BytesIO(base64.b64decode(r.json()["predictions"][0]["gradcam"])))
    assert overlay.size == (16, 16) and overlay.mode == "RGB"
    assert client.get("/labels").json() == {"labels": list(KO.values())}
    meta = client.get("/metadata").json()
    assert meta["input"] == "3x16x16" and meta["engine"] == "pytorch" and meta["limits"]["max_files"] == 4
    assert client.get("/healthz").json() == {"status": "ok", "api_key_required": False}
    page = client.get("/")
    assert page.status_code == 200 and 'type="file"' in page.text and 'capture="environment"' in page.text
    docs = client.get("/docs")
    assert docs.status_code == 200 and "cdn" not in docs.text
    script = docs.text.split('<script src="')[1].split('"')[0]
    assert script.startswith("/") and client.get(script).status_code == 200  # served here, not from a CDN
    assert "/predict" in client.get("/openapi.json").json()["paths"]


def flat_png(width: int, height: int) -> bytes:
    """A real, small file (one gray tone compresses to almost nothing) with many pixels."""
    buffer = io.BytesIO()
    Image.new("L", (width, height), 128).save(buffer, format="PNG")
    return buffer.getvalue()


def bomb_png(width: int, height: int) -> bytes:
    from .conftest import _png_claiming
    return _png_claiming(width, height)


@pytest.mark.parametrize("request_kwargs, status, message", [
    ({"files": {"files": ("big.png", b"\0" * 300_000)}}, 413, "over the limit of 200,000 bytes"),
    ({"files": {"files": ("bomb.png", bomb_png(40000, 40000))}}, 413, "too many pixels (decompression bomb?)"),
    ({"files": {"files": ("flat.png", flat_png(1100, 1000))}}, 413, "1100x1000 pixels is over the limit of 1,000,000"),
    ({"files": {"files": ("x.png", b"this is text, not a picture")}}, 415, "not an image"),
    ({"files": {"files": ("x.png", png()[:60])}}, 422, "cannot decode"),
    ({"files": {"files": ("x.png", b"")}}, 422, "empty file"),
    ({"files": {"picture": ("x.png", png())}}, 422, "multipart field 'files'"),
    ({"files": [("files", ("x.png", png()))] * 5}, 413, "Too many files"),
    ({"json": {"images": ["%%%not base64"]}}, 422, "not valid base64"),
    ({"json": {"images": []}}, 422, "no image"),
    ({"json": [1, 2]}, 422, "must be an object"),
    ({"content": b"{broken", "headers": {"content-type": "application/json"}}, 422, "malformed JSON"),
    ({"content": b"hello", "headers": {"content-type": "text/plain"}}, 415, "send multipart/form-data"),
    ({"content": b"--x\r\nbroken", "headers": {"content-type": "multipart/form-data; boundary=x"}}, 422, ""),
])
def test_every_bad_request_is_a_clear_4xx(client, request_kwargs, status, message):
    r = client.post("/predict", **request_kwargs)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]


def test_the_size_limit_acts_before_the_body_is_read(run):
    """A declared Content-Length over the limit is refused before any byte of the body is received."""
    import asyncio

    from imgclf.deploy.serve import BodyLimit

    received, sent = [], []

    async def app(scope, receive, send):  # would read the body
        received.append(await receive())

    async def receive():
        received.append("body read")
        return {"type": "http.request", "body": b"x" * 10, "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "headers": [(b"content-length", b"999999")]}
    asyncio.run(BodyLimit(app, 1000)(scope, receive, send))
    assert received == [] and sent[0]["status"] == 413
    # Streamed without a Content-Length: stopped as soon as the count passes the limit.
    chunks = iter([b"x" * 600, b"x" * 600, b"x" * 600])

    async def streaming():
        received.append("chunk")
        return {"type": "http.request", "body": next(chunks), "more_body": True}

    async def reader(scope, receive, send):
        while True:
            await receive()

    sent.clear()
    asyncio.run(BodyLimit(reader, 1000)({"type": "http", "headers": []}, streaming, send))
    assert received.count("chunk") == 2 and sent[0]["status"] == 413


def test_api_key(run, monkeypatch):
    with TestClient(create_app(run, api_key="s3cret"), base_url="http://localhost") as c:
        assert c.post("/predict", files={"files": ("a.png", png())}).status_code == 401
        assert c.get("/labels", headers={"X-API-Key": "wrong"}).status_code == 401
        assert c.get("/labels", headers={"X-API-Key": "s3cret"}).status_code == 200
        assert c.get("/labels", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.get("/healthz").json()["api_key_required"] is True
    monkeypatch.setenv("IMGCLF_API_KEY", "from-env")
    with TestClient(create_app(run), base_url="http://localhost") as c:
        assert c.get("/labels").status_code == 401
        assert c.get("/labels", headers={"X-API-Key": "from-env"}).status_code == 200


def test_an_onnx_file_serves_alone_and_answers_without_gradcam(run, tmp_path):
    exported = export(run, "onnx", dynamic_batch=True, output=run.run / "serve.onnx")
    alone = tmp_path / "model.onnx"
    shutil.copy(exported.path, alone)
    with TestClient(create_app(OnnxClassifier(alone)), base_url="http://localhost") as c:
        r = c.post("/predict", files={"files": ("a.png", png("dark"))})
        assert r.status_code == 200 and r.json()["predictions"][0]["top"][0]["label"] == KO["dark"]
        assert c.get("/metadata").json()["engine"] == "onnxruntime"
        r = c.post("/predict?gradcam=true", files={"files": ("a.png", png("dark"))})
        assert r.status_code == 200 and r.json()["predictions"][0]["top"][0]["label"] == KO["dark"]
        assert "gradcam" not in r.json()["predictions"][0] and "needs the PyTorch model" in r.json()["warnings"][0]


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(run):
    import asyncio

    import httpx

    calls = []
    original = run.proba

    def counting(x):
        calls.append(len(x))
        return original(x)

    app = create_app(run, batch_wait_ms=50)
    kinds = ["bar", "bright", "dark"] * 8

    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            return await asyncio.gather(*[c.post("/predict", files={"files": ("a.png", png(k, i))})
                                          for i, k in enumerate(kinds)])

    run.proba = counting
    try:
        responses = asyncio.run(go())
    finally:
        run.proba = original
    assert [r.json()["predictions"][0]["top"][0]["label"] for r in responses] == [KO[k] for k in kinds]
    assert sum(calls) == len(kinds) and len(calls) < len(kinds) and max(calls) > 1


def _containers(inner: st.SearchStrategy) -> st.SearchStrategy:
    return st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                           _containers, max_leaves=10)


def schema_operations() -> list[tuple[str, str, list[str]]]:
    """(path, method, query parameter names) of every operation the app's OpenAPI schema declares."""
    from imgclf.inference.predictor import Predictor

    class Stub(Predictor):  # the schema does not depend on the model
        classes, config = ["a"], None

    spec = create_app(Stub()).openapi()
    return [(path, method.upper(), [p["name"] for p in op.get("parameters", [])])
            for path, item in spec["paths"].items() for method, op in item.items()]


OPERATIONS = schema_operations()


@settings(max_examples=80, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(operation=st.sampled_from(OPERATIONS + [("/", "GET", []), ("/predict", "PUT", []), ("/nope", "POST", [])]),
       values=st.lists(st.text(max_size=8) | st.integers(-5, 5000).map(str) | st.sampled_from(["true", "0"]),
                       min_size=3, max_size=3),
       body=st.one_of(json_values.map(lambda v: ("json", v)), st.binary(max_size=300).map(lambda b: ("raw", b)),
                      st.lists(st.binary(max_size=200), max_size=3).map(lambda b: ("files", b))),
       content_type=st.sampled_from(["application/json", "multipart/form-data; boundary=zz", "image/png", ""]))
def test_random_requests_over_the_openapi_schema_never_get_a_5xx(client, operation, values, body, content_type):
    path, method, names = operation
    query = dict(zip(names + ["unknown"], values))
    kind, value = body
    if kind == "json":
        r = client.request(method, path, params=query, json=value)
    elif kind == "files":
        r = client.request(method, path, params=query, files=[("files", ("f.png", b)) for b in value] or None)
    else:
        r = client.request(method, path, params=query, content=value, headers={"content-type": content_type})
    assert r.status_code < 500, (r.status_code, r.text)
    if r.status_code >= 400 and path == "/predict":
        assert "error" in r.json()
    assert {"/predict", "/labels", "/metadata", "/healthz"} <= {op[0] for op in OPERATIONS}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_browser_uploads_a_photo_and_sees_the_label(run, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    driver = headless_chrome("the web page")
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "imgclf", "serve", str(run.run.path), "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    photo = tmp_path / "photo.png"
    photo.write_bytes(png("dark", 7))
    try:
        for _ in range(150):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert server.poll() is None, server.stdout.read().decode()
                time.sleep(0.2)
        driver.get(f"http://127.0.0.1:{port}/")
        WebDriverWait(driver, 20).until(lambda d: "classes" in d.find_element(By.ID, "model").text)
        driver.find_element(By.ID, "file").send_keys(str(photo))
        label = WebDriverWait(driver, 30).until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR,
                                                                                                "h2.label")))
        assert label.text == KO["dark"]  # the Korean name arrives and is drawn as text
        assert len(driver.find_elements(By.CSS_SELECTOR, ".bar")) == 3
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
        # The API page draws its operations with Swagger UI's own files from the server: no CDN, works offline.
        driver.get(f"http://127.0.0.1:{port}/docs")
        paths = WebDriverWait(driver, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".opblock-summary-path"))
        assert "/predict" in {p.text.strip() for p in paths}
        assert not [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    finally:
        driver.quit()
        server.terminate()
        server.wait(10)


def test_each_request_gets_an_answer_even_on_a_new_event_loop(run):
    """Without the lifespan context every TestClient request runs on its own event loop; the batcher follows."""
    c = TestClient(create_app(run), base_url="http://localhost")
    for kind in ("bar", "dark"):
        r = c.post("/predict", files={"files": ("a.png", png(kind))})
        assert r.status_code == 200 and r.json()["predictions"][0]["top"][0]["label"] == KO[kind]


# Run in a fresh interpreter in which importing torch or timm fails.
NO_TORCH = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'timm', 'torchvision'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
"""


def test_help_predict_and_serve_an_onnx_file_without_importing_torch(run, tmp_path):
    exported = export(run, "onnx", dynamic_batch=True, output=tmp_path / "alone.onnx")
    image = tmp_path / "bright.png"
    image.write_bytes(png("bright"))
    script = NO_TORCH + f"""
from imgclf.cli.main import main
try:
    main(['--help'])
except SystemExit as done:
    assert done.code == 0
assert main(['predict', {str(exported.path)!r}, {str(image)!r}, '--top-k', '1']) == 0
slow = sorted({{m.split('.')[0] for m in sys.modules}} & {{'pandas', 'scipy', 'sklearn'}})
assert not slow, f'predicting a photo imported {{slow}}'
from fastapi.testclient import TestClient
from imgclf.inference.load import load_predictor
from imgclf.deploy.serve import create_app
app = create_app(load_predictor({str(exported.path)!r}))
with TestClient(app, base_url="http://localhost") as client:
    answer = client.post('/predict', files={{'files': ('x.png', open({str(image)!r}, 'rb').read())}})
    assert answer.status_code == 200, answer.text
    print('served', answer.json()['predictions'][0]['top'][0]['label'])
assert not [m for m in sys.modules if m.split('.')[0] in ('torch', 'timm')]
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"bright.png  {KO['bright']}" in result.stdout and f"served {KO['bright']}" in result.stdout
