"""imgclf export --format web (issue 27): a static folder that runs the model in the browser with ONNX Runtime
Web, tested in headless Chromium with a real page load: the same answers as onnxruntime in Python on whole photos,
a photo picked in the page answered, and the app still answering with the server gone (service worker)."""
from __future__ import annotations

import base64
import functools
import json
import re
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image
from selenium.webdriver.support.ui import WebDriverWait

from imgclf.cli.main import main
from imgclf.deploy import web
from imgclf.inference.load import load_predictor
from imgclf.inference.onnx import OnnxClassifier, RawPixels
from imgclf.training.job import train

from .conftest import TINY, headless_chrome, write_photos_of_two_sizes


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """A run on photos of two sizes above its input, exported as a web app."""
    root = tmp_path_factory.mktemp("web")
    data = write_photos_of_two_sizes(root, 10)
    clf = train(str(data), epochs=3, img_size=16, project=str(root / "runs"), name="w", **TINY)
    assert main(["export", str(clf.run.path), "--format", "web"]) == 0
    return data, clf, clf.run / "web"


def test_the_folder_holds_the_app_the_model_and_the_pinned_runtime_and_nothing_from_a_cdn(app, capsys):
    _, clf, folder = app
    names = {p.name for p in folder.iterdir()}
    assert {"index.html", "app.js", "sw.js", "labels.json", "manifest.webmanifest", "icon-192.png", "icon-512.png",
            "model_raw.onnx", "export.json", *web.RUNTIME} <= names
    assert all(web._sha256(folder / n) == digest for n, digest in web.RUNTIME.items())
    for text in ("index.html", "app.js", "sw.js"):
        assert not re.search(r"https?://", (folder / text).read_text()), text  # everything from the folder
    info = json.loads((folder / "labels.json").read_text())
    assert info["labels"] == clf.classes and info["task"] == "multiclass"
    manifest = json.loads((folder / "manifest.webmanifest").read_text())
    assert manifest["display"] == "standalone" and Image.open(folder / "icon-512.png").size == (512, 512)
    record = json.loads((folder / "export.json").read_text())
    assert record["format"] == "web" and record["check"]["passed"] and record["check"]["latency_ms_batch1"] > 0
    assert record["files"]["model_raw.onnx"] == (folder / "model_raw.onnx").stat().st_size
    worker = (folder / "sw.js").read_text()
    assert all(f'"{n}"' in worker for n in ("model_raw.onnx", "app.js", *web.RUNTIME))  # all cached for offline
    # the folder predicts from the command line too, from whole photos, like the run
    photos = sorted(app[0].rglob("*.png"))[:4]
    assert [p.labels[0] for p in load_predictor(folder).predict(photos)] == \
        [p.labels[0] for p in clf.predict(photos)]


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def _serve(folder):
    handler = functools.partial(_Quiet, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


CLASSIFY = """const done = arguments[arguments.length - 1];
window.imgclf.ready.then(() => Promise.all(arguments[0].map(b => window.imgclf.classifyBase64(b))))
  .then(rs => done(rs.map(r => r.probs)), e => done(String(e)));"""
READY = """const done = arguments[arguments.length - 1];
navigator.serviceWorker.ready.then(() => done(!!navigator.serviceWorker.controller));"""


def test_the_browser_answers_as_python_and_keeps_answering_offline(app):
    data, clf, folder = app
    photos = sorted(data.rglob("*.png"))[::3][:12]
    encoded = [base64.b64encode(p.read_bytes()).decode() for p in photos]
    raw = RawPixels()
    expected = OnnxClassifier(folder / "model_raw.onnx").task.probabilities_np(
        OnnxClassifier(folder / "model_raw.onnx").logits([raw.load(p) for p in photos]))
    server = _serve(folder)
    driver = headless_chrome("the web export")
    try:
        driver.set_script_timeout(60)
        driver.get(f"http://127.0.0.1:{server.server_port}/")
        probs = driver.execute_async_script(CLASSIFY, encoded)
        assert isinstance(probs, list), probs
        assert list(np.argmax(probs, 1)) == list(expected.argmax(1))
        assert np.abs(np.array(probs) - expected).max() < 1e-4  # the same kernels, in WebAssembly
        # a photo picked in the page: the answer and the top classes shown
        driver.find_element("id", "file").send_keys(str(photos[0]))
        WebDriverWait(driver, 30).until(lambda d: d.find_element("id", "answer").text)
        assert driver.find_element("id", "answer").text == clf.classes[int(expected[0].argmax())]
        assert len(driver.find_elements("css selector", "#top li")) == len(clf.classes)
        # installed: the service worker controls the page once reloaded; then the server goes away
        driver.refresh()
        assert driver.execute_async_script(READY) is True
        server.shutdown()
        server.server_close()
        driver.refresh()
        again = driver.execute_async_script(CLASSIFY, encoded[:2])
        assert isinstance(again, list) and list(np.argmax(again, 1)) == list(expected[:2].argmax(1)), again
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    finally:
        driver.quit()
        server.server_close()
    assert not errors, errors


def test_an_existing_folder_outside_the_run_is_refused_and_kept(app, tmp_path, capsys):
    _, clf, _ = app
    mine = tmp_path / "site"
    mine.mkdir()
    (mine / "index.html").write_text("my page")
    assert main(["export", str(clf.run.path), "--format", "web", "--output", str(mine)]) == 2
    assert "not an empty folder" in capsys.readouterr().err
    assert (mine / "index.html").read_text() == "my page" and len(list(mine.iterdir())) == 1


def test_without_the_runtime_files_or_npm_the_export_says_how_to_get_them(app, tmp_path, monkeypatch, capsys):
    _, clf, _ = app
    monkeypatch.setenv("IMGCLF_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(web.shutil, "which", lambda name: None)
    assert main(["export", str(clf.run.path), "--format", "web", "--output", str(tmp_path / "site")]) == 2
    err = capsys.readouterr().err
    assert "npm" in err and "onnxruntime-web" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "site").exists()  # refused before anything was written
