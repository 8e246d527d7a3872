"""The server against hostile and unlucky clients: images that decode to far more than they weigh, DNS rebinding,
malformed bodies, keys, and clients that connect and stall."""
from __future__ import annotations

import base64
import io
import json
import socket
import subprocess
import sys
import threading
import time
import tracemalloc

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image

from imgclf.data.decode import open_image, to_mode
from imgclf.deploy.guards import DecodeBudget, Limits, allowed_hosts
from imgclf.deploy.serve import create_app
from imgclf.training.job import train

from .conftest import TINY, write_class_folders


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("guards")
    return train(str(write_class_folders(root / "data", 8)), epochs=1, project=str(root / "runs"), name="g", **TINY)


@pytest.fixture(scope="module")
def client(run):
    with TestClient(create_app(run, Limits(decode_wait_s=0.2)), base_url="http://localhost") as c:
        yield c


def encoded(im: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    im.save(buffer, format="PNG", **kwargs)
    return buffer.getvalue()


def gray16(side: int) -> bytes:
    return encoded(Image.fromarray(np.full((side, side), 40000, np.uint16)))


# ---- 1. memory ---------------------------------------------------------------------------------------------------

def test_sixteen_bit_images_convert_without_float64_copies():
    im = open_image(io.BytesIO(gray16(3000)))  # 9 M pixels: one float64 copy alone would be 72 MB
    tracemalloc.start()
    try:
        out = to_mode(im, 1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out.mode == "L" and np.asarray(out)[0, 0] == round(40000 / 65535 * 255)
    assert peak < 30e6, f"{peak / 1e6:.0f} MB for a 9 M pixel conversion"


MEASURE = """
import io, sys
from imgclf.data.decode import Preprocess, decode_cost, open_image
def status(key):
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(key))
data, channels = open(sys.argv[1], "rb").read(), int(sys.argv[2])
pre = Preprocess(channels, 64)
cost = decode_cost(io.BytesIO(data), channels, None, pre.least_side)
open("/proc/self/clear_refs", "w").write("5")  # the peak (VmHWM) starts again from here
before = status("VmRSS:")
pre(open_image(io.BytesIO(data), None, pre.least_side))
print(cost, status("VmHWM:") - before)
"""


@pytest.mark.parametrize("mode", ["I;16", "RGBA", "RGB", "LA", "P"])
def test_decode_cost_bounds_what_decoding_really_holds(tmp_path, mode):
    """The estimate the budget reserves covers the peak memory the decode and conversion really take (measured
    in a fresh process, 9 M pixels)."""
    side = 3000
    im = Image.fromarray(np.zeros((side, side), np.uint16)) if mode == "I;16" else Image.new(mode, (side, side))
    path = tmp_path / "x.png"
    im.save(path, **({"transparency": 0} if mode == "P" else {}))
    for channels in (1, 3):
        done = subprocess.run([sys.executable, "-c", MEASURE, str(path), str(channels)], capture_output=True,
                              text=True, timeout=60, check=True)
        cost, held = map(int, done.stdout.split())
        assert held <= cost, f"{mode} -> {channels} channels: held {held / 1e6:.0f} MB, estimated {cost / 1e6:.0f}"
        assert held > side * side / 2 and cost <= 4 * held, "an estimate far too high refuses images for nothing"


def test_an_image_over_the_decode_memory_is_refused_and_a_spent_budget_answers_503(run):
    app = create_app(run, Limits(decode_memory_bytes=8 * 2**20, decode_wait_s=0.2))
    with TestClient(app, base_url="http://localhost") as c:
        r = c.post("/predict", files={"files": ("big.png", gray16(2000))})  # 4 M pixels x 5 bytes > 8 MB
        assert r.status_code == 413 and "--decode-memory-mb" in r.json()["error"]
        small = encoded(Image.new("RGB", (64, 64), (200, 10, 10)))
        assert c.post("/predict", files={"files": ("ok.png", small)}).status_code == 200
        budget: DecodeBudget = app.state.decode_budget
        with budget.hold(budget.total):  # every byte in use by "other requests"
            r = c.post("/predict", files={"files": ("ok.png", small)})
        assert r.status_code == 503 and r.headers["retry-after"] == "1" and "busy" in r.json()["error"]
        assert budget.used == 0 and c.post("/predict", files={"files": ("ok.png", small)}).status_code == 200


def test_the_budget_lets_waiting_decodes_through_in_turn():
    budget, order = DecodeBudget(100, wait_s=5), []

    def take(name: str, hold_s: float) -> None:
        with budget.hold(80):
            order.append(name)
            time.sleep(hold_s)

    first = threading.Thread(target=take, args=("first", 0.3))
    first.start()
    time.sleep(0.05)
    take("second", 0)  # waits for the first to finish: 80 + 80 > 100
    first.join()
    assert order == ["first", "second"] and budget.used == 0


# ---- 2. DNS rebinding --------------------------------------------------------------------------------------------

def test_only_the_servers_own_host_names_are_answered(run):
    app = create_app(run)
    for host, status in [("localhost", 200), ("127.0.0.1:8000", 200), ("[::1]:8000", 200),
                         ("evil.example", 400), ("evil.example:8000", 400), ("localhost.evil.example", 400)]:
        with TestClient(app, base_url=f"http://{host}") as c:
            assert c.get("/labels").status_code == status, host
    names = allowed_hosts("192.168.1.5", ["photos.lan"])
    assert {"localhost", "127.0.0.1", "[::1]", "192.168.1.5", "photos.lan"} <= set(names)
    assert socket.gethostname().lower() in allowed_hosts("0.0.0.0") and "[::2]" in allowed_hosts("::2")


# ---- 3. malformed bodies -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("body", [{"image": "data:xx"}, {"image": "data:image/png,AAAA"}, {"image": "data:"},
                                  {"images": [{"a": 1}]}, {"images": "abc"}, {"image": None}, {"images": []},
                                  {"images": ["A" * 8] * 10_000}])
def test_malformed_json_images_are_a_json_4xx(client, body):
    r = client.post("/predict", json=body)
    assert 400 <= r.status_code < 500 and "error" in r.json(), (r.status_code, r.text)


def test_a_data_url_is_accepted(client):
    image = base64.b64encode(encoded(Image.new("RGB", (32, 32), (250, 250, 250)))).decode()
    r = client.post("/predict", json={"image": f"data:image/png;base64,{image}"})
    assert r.status_code == 200 and r.json()["predictions"][0]["top"]


def _multipart(parts: list[tuple[str, bytes]], boundary: str = "xyz") -> bytes:
    out = b""
    for name, data in parts:
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"f.png\"\r\n"
                f"Content-Type: image/png\r\n\r\n").encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


@settings(max_examples=120, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(st.one_of(
    st.binary(max_size=400).map(lambda b: ("application/json", b)),
    st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=12),
                 lambda inner: st.lists(inner, max_size=5) | st.dictionaries(
                     st.sampled_from(["image", "images", "x"]) | st.text(max_size=5), inner, max_size=5),
                 max_leaves=12).map(lambda v: ("application/json", json.dumps(v).encode())),
    st.text(alphabet="[{", min_size=2000, max_size=5000).map(lambda t: ("application/json", t.encode())),
    st.lists(st.tuples(st.sampled_from(["files", "file", "other", ""]), st.binary(max_size=80)), max_size=30)
    .map(lambda parts: ("multipart/form-data; boundary=xyz", _multipart(parts))),
    st.binary(max_size=400).map(lambda b: ("multipart/form-data; boundary=xyz", b"--xyz\r\n" + b)),
    st.binary(max_size=200).map(lambda b: ("multipart/form-data", b)),
))
def test_fuzzed_bodies_never_get_a_5xx(client, request_body):
    content_type, body = request_body
    r = client.post("/predict", content=body, headers={"content-type": content_type})
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:200])
    assert "error" in r.json()


# ---- 4. the API key ----------------------------------------------------------------------------------------------

def test_only_bearer_or_x_api_key_carry_the_key(run, monkeypatch, tmp_path):
    with TestClient(create_app(run, api_key="s3cret"), base_url="http://localhost") as c:
        assert c.get("/labels", headers={"Authorization": "s3cret"}).status_code == 401
        assert c.get("/labels", headers={"Authorization": "Basic s3cret"}).status_code == 401
        assert c.get("/labels", headers={"Authorization": "bearer s3cret"}).status_code == 200
        assert c.get("/labels", headers={"X-API-Key": "s3cret"}).status_code == 200
    monkeypatch.setenv("IMGCLF_API_KEY", "")
    with pytest.raises(Exception, match="IMGCLF_API_KEY is empty"):
        create_app(run)


def test_an_empty_key_is_a_one_line_error_and_a_key_file_works(run, tmp_path, capsys):
    from imgclf.cli.main import main

    assert main(["serve", str(run.run.path), "--api-key", ""]) == 2  # refused before the model loads or binds
    assert "--api-key is empty" in capsys.readouterr().err
    empty = tmp_path / "key.txt"
    empty.write_text("\n")
    assert main(["serve", str(run.run.path), "--api-key-file", str(empty)]) == 2
    assert "is empty" in capsys.readouterr().err
    assert main(["serve", str(run.run.path), "--api-key-file", str(tmp_path / "missing.txt")]) == 2
    assert "cannot read it" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    helped = capsys.readouterr().out
    assert "--api-key-file" in helped and "IMGCLF_API_KEY" in helped and "ps" in helped


# ---- 5. slow clients ---------------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _closed(sock: socket.socket, within: float) -> bytes | None:
    """What the server sent before closing ``sock``, or None if it is still open after ``within`` seconds."""
    sock.settimeout(within)
    received = b""
    try:
        while chunk := sock.recv(4096):
            received += chunk
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return received


def test_stalled_clients_are_dropped_while_the_server_answers(run, tmp_path):
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "imgclf", "serve", str(run.run.path), "--port", str(port),
                               "--timeout", "1", "--max-connections", "64"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 90
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                assert time.time() < deadline and server.poll() is None, server.stderr.read().decode()
                time.sleep(0.3)
        silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
        trickle = socket.create_connection(("127.0.0.1", port))
        trickle.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")  # headers never finished
        body = socket.create_connection(("127.0.0.1", port))
        body.sendall(b"POST /predict HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n{\"images\": [")  # a body that stops
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200  # meanwhile
        assert all(_closed(s, 4) == b"" for s in silent + [trickle])
        answer = _closed(body, 4)
        assert answer is not None and answer.startswith(b"HTTP/1.1 408") and b"stalled" in answer
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
    finally:
        server.terminate()
        server.wait(10)


def test_the_body_timeout_stops_at_the_end_of_the_body():
    """A stalled body gets 408; once the body is in, waiting on receive (for a disconnect) is not a stall."""
    import asyncio

    from imgclf.deploy.guards import BodyLimit

    sent = []

    async def send(message):
        sent.append(message)

    async def app(scope, receive, send):  # reads the body, then listens for a disconnect, as streaming does
        await receive()
        assert (await receive())["type"] == "http.disconnect"
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def one_part_then_late_disconnect():
        messages = [{"type": "http.request", "body": b"{}", "more_body": False}]

        async def receive():
            if messages:
                return messages.pop()
            await asyncio.sleep(0.3)  # longer than the timeout
            return {"type": "http.disconnect"}
        return receive

    async def stalled():
        async def receive():
            await asyncio.sleep(5)
        return receive

    async def run(make):
        await BodyLimit(app, 1000, timeout=0.1)({"type": "http", "headers": []}, await make(), send)

    asyncio.run(run(one_part_then_late_disconnect))
    assert sent[0]["status"] == 200
    sent.clear()
    asyncio.run(run(stalled))
    assert sent[0]["status"] == 408
