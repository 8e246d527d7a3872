"""Benchmark: how much memory the worst images the server's limits admit cost it, 16 concurrent requests at once.

Small PNGs that decode to huge images (a 16-bit grey PNG of 40 M pixels is 77 KB) are the cheapest way to take a
server's memory. For each kind of image (16-bit grey, RGBA, palette with transparency, grey+alpha, RGB) this sends
one image of the largest size the server admits (its --max-pixels and --decode-memory-mb, read from /metadata) in
each of N concurrent requests, and reports the peak growth of the server's resident memory over its memory after a
warm-up, with the status codes (413 for a refused image, 503 when the decode memory is in use: both fine; 5xx other
than 503 is a failure).

    python bench/serve_memory.py [MODEL] [--concurrency 16] [--code DIR] [--kinds gray16,rgba,...] [--side N]

``--code DIR`` runs the server from another checkout (``git worktree add /tmp/base COMMIT``) for a before/after
figure; ``--side N`` sends N x N images instead of the largest admitted (the old server had no decode budget).
"""
from __future__ import annotations

import argparse
import asyncio
import io
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_load import default_model, rss_mb  # noqa: E402

# kind -> (make an image of side n, bytes per pixel decoding it is expected to hold at most)
KINDS = {
    "gray16": lambda n: Image.fromarray(np.zeros((n, n), np.uint16)),
    "rgba": lambda n: Image.fromarray(np.zeros((n, n, 4), np.uint8)),
    "palette": lambda n: Image.fromarray(np.zeros((n, n), np.uint8)).convert("P"),
    "la": lambda n: Image.fromarray(np.zeros((n, n, 2), np.uint8), "LA"),
    "rgb": lambda n: Image.fromarray(np.zeros((n, n, 3), np.uint8)),
}


def png(kind: str, side: int) -> bytes:
    buffer = io.BytesIO()
    extra = {"transparency": 0} if kind == "palette" else {}
    KINDS[kind](side).save(buffer, format="PNG", compress_level=9, **extra)
    return buffer.getvalue()


def largest_admitted(kind: str, channels: int, max_pixels: int, budget: int) -> int:
    """The largest square side of ``kind`` that both the pixel limit and the decode budget admit."""
    from imgclf.data.decode import decode_cost

    per_pixel = decode_cost(io.BytesIO(png(kind, 64)), channels) / 64 ** 2
    return int(min(max_pixels, budget / per_pixel) ** 0.5)


class Peak(threading.Thread):
    """Polls the server's resident memory every 5 ms and keeps the highest."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.running = pid, 0.0, True

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, rss_mb(self.pid))
            time.sleep(0.005)


async def burst(port: int, body: bytes, n: int) -> list[int]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=300) as c:
        responses = await asyncio.gather(*[c.post("/predict", files={"files": ("x.png", body)}) for _ in range(n)])
    return [r.status_code for r in responses]


def start(model: str, code: Path | None) -> tuple[subprocess.Popen, int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=str(code)) if code else None
    target = str(Path(model).resolve()) if Path(model).exists() else model  # a run, a file, or a model name
    server = subprocess.Popen([sys.executable, "-m", "imgclf", "serve", target, "--port",
                               str(port)], cwd=code, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return server, port
        except httpx.HTTPError:
            if time.time() > deadline or server.poll() is not None:
                raise SystemExit("the server did not start")
            time.sleep(0.3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", default=None)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--code", type=Path, default=None, help="run the server from this checkout")
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--side", type=int, default=None, help="image side (default: the largest admitted)")
    args = parser.parse_args()
    model = args.model or default_model()
    server, port = start(model, args.code)
    try:
        meta = httpx.get(f"http://127.0.0.1:{port}/metadata").json()
        channels = int(meta["input"].split("x")[0])
        limits = meta["limits"]
        small = png("rgb", 64)
        asyncio.run(burst(port, small, args.concurrency))  # warm-up: threads, the model's batch
        print(f"model {model} ({meta['input']}), limits {limits}, {args.concurrency} concurrent requests")
        for kind in args.kinds.split(","):
            side = args.side or largest_admitted(kind, channels, limits["max_pixels"],
                                                 limits.get("decode_memory_bytes", 2 ** 40))
            body = png(kind, side)
            base = rss_mb(server.pid)
            peak = Peak(server.pid)
            peak.start()
            started = time.perf_counter()
            codes = asyncio.run(burst(port, body, args.concurrency))
            peak.running = False
            peak.join()
            print(f"{kind:8s} {side}x{side} ({len(body) / 1e3:,.0f} KB): peak RSS growth {peak.peak - base:,.0f} MB,"
                  f" {time.perf_counter() - started:.1f} s, status {dict(Counter(codes))}")
            time.sleep(1)
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
