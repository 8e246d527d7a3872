"""An exported web app (``imgclf export --format web``) run where it runs: served over HTTP from its folder and
loaded in headless Chromium, driven by Selenium, for ``imgclf benchmark``'s web row. The page's own script does
the work (``window.imgclf.classifyBase64``), so the figures are the app's: ONNX Runtime Web's WebAssembly, one
thread, as a phone's browser runs it."""
from __future__ import annotations

import base64
import contextlib
import functools
import io
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from ..errors import UserError

_CLASSIFY = """const done = arguments[arguments.length - 1];
window.imgclf.ready.then(async () => { const out = [];
  for (const b of arguments[0]) out.push(await window.imgclf.classifyBase64(b));
  return out; }).then(rs => done(rs), e => done(String(e)));"""


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:  # no line per file served
        pass


@contextlib.contextmanager
def browser_page(folder: Path) -> Iterator[object]:
    """A headless Chromium tab with the app in ``folder`` loaded from a local HTTP server (both stopped after)."""
    chromium, driver_path = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        raise UserError("the browser row needs Selenium: pip install 'imgclf[browser]'") from None
    if not (chromium and driver_path):
        raise UserError("the browser row needs Chromium and its driver (Debian: apt-get install chromium "
                        "chromium-driver)")
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        driver.set_script_timeout(600)
        driver.get(f"http://127.0.0.1:{server.server_port}/")
        yield driver
    finally:
        driver.quit()
        server.shutdown()
        server.server_close()


def png_base64(rgb: np.ndarray) -> str:
    """One decoded photo (uint8 H x W x 3 RGB) as base64 PNG bytes, what the page decodes as a picked file."""
    picture = Image.fromarray(rgb)
    buffer = io.BytesIO()
    picture.save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def classify_in_browser(page: object, images: list[str]) -> tuple[np.ndarray, list[float]]:
    """The page's probabilities for each base64 image, and the milliseconds of each model run it measured."""
    answers = page.execute_async_script(_CLASSIFY, images)
    if not isinstance(answers, list):
        raise UserError(f"the web app failed in Chromium: {answers}")
    return np.array([a["probs"] for a in answers]), [float(a["ms"]) for a in answers]
