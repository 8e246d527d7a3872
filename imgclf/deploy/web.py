"""``imgclf export --format web``: a static folder that runs the model in the browser, offline, installable on a
phone's home screen: the raw-input ONNX file (the run's preprocessing inside, :mod:`imgclf.deploy.raw_input`), the
class names, ONNX Runtime Web's WebAssembly build, a page to pick, drop or take a photo, a web app manifest and a
service worker that keeps every file in the browser's cache.

The runtime files come from the npm registry's ``onnxruntime-web`` package, at a pinned version whose files'
SHA-256 are checked, fetched once with ``npm pack`` into ``$IMGCLF_CACHE_DIR`` (``make setup`` does it) and
copied into each export: the app loads nothing from a CDN, so it works where there is no network.

    python -m imgclf.deploy.web      # fetch the runtime files now (what ``make web`` runs)
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from importlib import resources
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from ..data.decode import Preprocess
from ..errors import UserError
from ..inference.classifier import Classifier
from ..inference.load import WEB_MODEL
from ..inference.onnx import RAW_INPUT_FORMAT
from .export import EXPORT_RECORD, ExportResult, export, writable_folder

ORT_WEB_VERSION = "1.23.2"
# the files of onnxruntime-web's dist/ the app needs (the plain WebAssembly build), with their SHA-256
RUNTIME = {"ort.wasm.min.js": "c6bc9f8e1d0ecc3983a57910e6a30b2230a512bcd2e0207cd64306459c3de7b4",
           "ort-wasm-simd-threaded.wasm": "45eaee27761ad883742a8d4b8fce1538d60ce43b51adf1726fafccc59b8c1a15",
           "ort-wasm-simd-threaded.mjs": "90a557d15c02bac4504d95b67f431d8594635ed2a0a62a7f2cd83d090ff91d3e"}
APP_FILES = ("index.html", "app.js")
MODEL = WEB_MODEL


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def runtime_dir() -> Path:
    """Where the pinned runtime files are kept: ``$IMGCLF_CACHE_DIR/onnxruntime-web-VERSION``."""
    root = Path(os.environ.get("IMGCLF_CACHE_DIR", "~/.cache/imgclf")).expanduser()
    return root / f"onnxruntime-web-{ORT_WEB_VERSION}"


def runtime_files() -> Path:
    """The folder holding the runtime files, fetched with ``npm pack`` the first time; any file whose SHA-256 is
    not the pinned one is fetched again."""
    folder = runtime_dir()
    if all((folder / name).is_file() and _sha256(folder / name) == digest for name, digest in RUNTIME.items()):
        return folder
    npm = shutil.which("npm")
    if npm is None:
        raise UserError(f"--format web needs onnxruntime-web {ORT_WEB_VERSION}'s files in {folder}: install "
                        f"Node.js's npm (imgclf fetches them once from the npm registry), or run 'make web'")
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run([npm, "pack", f"onnxruntime-web@{ORT_WEB_VERSION}", "--pack-destination", tmp],
                              capture_output=True, text=True, timeout=600)
        packed = list(Path(tmp).glob("onnxruntime-web-*.tgz"))
        if done.returncode != 0 or not packed:
            raise UserError(f"npm could not fetch onnxruntime-web@{ORT_WEB_VERSION} "
                            f"({(done.stderr.strip().splitlines() or ['no output'])[-1][:200]}); is the npm "
                            f"registry reachable?")
        folder.mkdir(parents=True, exist_ok=True)
        with tarfile.open(packed[0]) as tar:
            for name in RUNTIME:  # only the named members, each written by us: nothing else of the archive
                member = tar.extractfile(f"package/dist/{name}")
                if member is None:
                    raise UserError(f"onnxruntime-web@{ORT_WEB_VERSION} has no dist/{name}")
                (folder / name).write_bytes(member.read())
    wrong = [name for name, digest in RUNTIME.items() if _sha256(folder / name) != digest]
    if wrong:
        raise UserError(f"onnxruntime-web@{ORT_WEB_VERSION}'s {', '.join(wrong)} differ from the pinned files; "
                        f"delete {folder} and try again")
    return folder


def _title(clf: Classifier) -> str:
    names = [c.replace("_", " ") for c in clf.classes]
    if len(names) == 2 and not clf.task.multilabel:
        return f"{names[clf.positive]} or {names[1 - clf.positive]}?"
    return f"{Path(str(clf.config.data)).name or 'imgclf'}: {len(names)} classes"


def _icon(path: Path, size: int, title: str) -> None:
    """A plain square icon for the home screen: the first letter of the app's name on the theme's blue."""
    image = Image.new("RGB", (size, size), (29, 78, 216))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=size // 2)
    draw.text((size / 2, size / 2), (title[:1] or "?").upper(), fill="white", font=font, anchor="mm")
    image.save(path)


def _write_app(folder: Path, clf: Classifier, title: str) -> list[str]:
    """The page, its script, labels.json, the manifest, icons and the service worker; returns every file name."""
    assets = resources.files("imgclf") / "assets" / "web"
    for name in APP_FILES:
        (folder / name).write_text((assets / name).read_text(encoding="utf-8"), encoding="utf-8")
    info = {"title": title, "model": MODEL, "labels": clf.classes, "task": clf.task.name, "positive": clf.positive,
            "threshold": clf.threshold, "least_side": Preprocess.of(clf.config).least_side}
    (folder / "labels.json").write_text(json.dumps(info, ensure_ascii=False, indent=1), encoding="utf-8")
    for size in (192, 512):
        _icon(folder / f"icon-{size}.png", size, title)
    manifest = {"name": title, "short_name": title[:12], "start_url": ".", "scope": ".", "display": "standalone",
                "background_color": "#f8fafc", "theme_color": "#1d4ed8",
                "icons": [{"src": f"icon-{s}.png", "sizes": f"{s}x{s}", "type": "image/png"} for s in (192, 512)]}
    (folder / "manifest.webmanifest").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    files = ["./", *APP_FILES, "labels.json", "manifest.webmanifest", "icon-192.png", "icon-512.png", MODEL,
             *RUNTIME]
    version = _sha256(folder / MODEL)[:12] + "-" + hashlib.sha256(json.dumps(info).encode()).hexdigest()[:8]
    worker = (assets / "sw.js").read_text(encoding="utf-8")
    (folder / "sw.js").write_text(worker.replace("__VERSION__", version).replace("__FILES__", json.dumps(files)),
                                  encoding="utf-8")
    return [*files[1:], "sw.js"]


def app_around_model(folder: Path, clf: Classifier) -> list[str]:
    """The app's files around the raw-input model already in ``folder`` (``model_raw.onnx``): the pinned runtime,
    the page, its script, manifest, icons and service worker; the names of all of them."""
    runtime = runtime_files()
    for name in RUNTIME:
        shutil.copyfile(runtime / name, folder / name)
    return _write_app(folder, clf, _title(clf))


def export_web(clf: Classifier, output: str | Path | None = None, check: int = 256) -> ExportResult:
    """The web app of the run in ``output`` (default ``RUN/web``): a folder to put on any static web host (or
    open with ``python -m http.server -d FOLDER``). The model is checked as ``imgclf export --raw-input`` checks
    it; ``export.json`` records the files, the check and onnxruntime's latency here (one photo)."""
    if clf.run is None:
        raise UserError("export needs a run directory made by 'imgclf train'")
    folder = Path(output) if output else clf.run / "web"
    writable_folder(folder, clf, make=False)
    runtime_files()  # before the work: a missing npm is said first
    folder.mkdir(parents=True, exist_ok=True)
    result = export(clf, "onnx", folder / MODEL, check=check, raw_input=True)
    files = app_around_model(folder, clf)
    result.check["format"] = "web"
    record = {"format": "web", "title": _title(clf), "input": RAW_INPUT_FORMAT, "labels": clf.classes,
              "runtime": f"onnxruntime-web {ORT_WEB_VERSION} (WebAssembly)", "check": result.check,
              "files": {name: (folder / name).stat().st_size for name in files}}
    (folder / EXPORT_RECORD).write_text(json.dumps(record, indent=1, ensure_ascii=False), encoding="utf-8")
    return ExportResult(folder, result.check)


if __name__ == "__main__":
    print(f"onnxruntime-web {ORT_WEB_VERSION}: {runtime_files()}")
