"""Benchmark: `imgclf serve` under load from a second process, over loopback only.

Starts the server in a subprocess on 127.0.0.1, then sends a bounded number of requests (default 2,000) from
N concurrent clients (default 16); a share of them (default 10%) are malformed: text sent as an image, a
truncated PNG, an empty file, a wrong form field, broken JSON, bad base64, a decompression-bomb header. Reports
requests/s, p50/p99 latency per kind, status codes (there must be no 5xx) and the server's resident memory at the
start, the middle and the end.

    python bench/serve_load.py [MODEL] [--requests 2000] [--concurrency 16] [--bad 0.1] [--workers 1]

MODEL is a run directory or .onnx file (default: bench-runs/inference-cnn from bench/inference.py, else a quick
3-epoch CNN on the bundled Fashion-MNIST sample).
"""
from __future__ import annotations

import argparse
import asyncio
import io
import random
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.conftest import _png_claiming  # noqa: E402  (the bomb header generator the tests use)


def rss_mb(pid: int) -> float:
    """Resident memory of the server and its worker processes (uvicorn --workers forks them)."""
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        total += next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")) / 1024
        todo += [int(child) for child in children]
    return total


def photos(n: int) -> list[bytes]:
    from imgclf.data.builtin import load_builtin

    source = load_builtin("fashion-mnist-sample", None)
    pixels = source.splits["test"].pixels[:n]
    out = []
    for p in pixels:
        buffer = io.BytesIO()
        Image.fromarray(p).save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


def malformed(rng: random.Random, good: bytes) -> tuple[str, dict]:
    kind = rng.choice(["text", "truncated", "empty", "field", "json", "base64", "bomb"])
    requests = {
        "text": {"files": {"files": ("a.png", b"hello, I am not a picture")}},
        "truncated": {"files": {"files": ("a.png", good[: len(good) // 3])}},
        "empty": {"files": {"files": ("a.png", b"")}},
        "field": {"files": {"photo": ("a.png", good)}},
        "json": {"content": b'{"images": [', "headers": {"content-type": "application/json"}},
        "base64": {"json": {"images": ["***"]}},
        "bomb": {"files": {"files": ("a.png", _png_claiming(50000, 50000))}},
    }
    return f"bad:{kind}", requests[kind]


async def load(port: int, n: int, concurrency: int, bad: float, pid: int) -> tuple[list, dict, float]:
    rng = random.Random(0)
    images = photos(200)
    plan = []
    for i in range(n):
        good = images[i % len(images)]
        plan.append(malformed(rng, good) if rng.random() < bad else ("good", {"files": {"files": ("x.png", good)}}))
    results, memory = [], {"start": rss_mb(pid)}
    queue: asyncio.Queue = asyncio.Queue()
    for item in plan:
        queue.put_nowait(item)

    async def client() -> None:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as c:
            while not queue.empty():
                kind, request = queue.get_nowait()
                started = time.perf_counter()
                r = await c.post("/predict", **request)
                results.append((kind, r.status_code, time.perf_counter() - started))
                if len(results) == n // 2:
                    memory["middle"] = rss_mb(pid)

    started = time.perf_counter()
    await asyncio.gather(*[client() for _ in range(concurrency)])
    elapsed = time.perf_counter() - started
    memory["end"] = rss_mb(pid)
    return results, memory, elapsed


def default_model() -> str:
    ready = Path("bench-runs/inference-cnn")
    if (ready / "best.safetensors").exists():
        return str(ready)
    from imgclf.training.job import train
    return str(train("fashion-mnist-sample", "cnn", 3, project="bench-runs", name="serve-cnn", exist_ok=True,
                     quiet=True, plots=False).run.path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", default=None)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--bad", type=float, default=0.1, help="share of malformed requests")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    model = args.model or default_model()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "imgclf", "serve", model, "--port", str(port), "--workers",
                               str(args.workers)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                if time.time() > deadline or server.poll() is not None:
                    raise SystemExit("the server did not start")
                time.sleep(0.3)
        results, memory, elapsed = asyncio.run(load(port, args.requests, args.concurrency, args.bad, server.pid))
    finally:
        server.terminate()
        server.wait(10)
    statuses = Counter(code for _, code, _ in results)
    print(f"model {model}, {args.requests} requests, {args.concurrency} concurrent clients, "
          f"{args.bad:.0%} malformed, {args.workers} server worker(s), loopback")
    print(f"{len(results) / elapsed:,.1f} requests/s over {elapsed:.1f} s; status codes {dict(sorted(statuses.items()))}; "
          f"5xx: {sum(v for k, v in statuses.items() if k >= 500)}")
    print("| requests | count | p50 ms | p99 ms | statuses |\n|---|---|---|---|---|")
    for kind in sorted({k for k, _, _ in results}, key=lambda k: (k != "good", k)):
        times = sorted(1000 * t for k, _, t in results if k == kind)
        codes = Counter(c for k, c, _ in results if k == kind)
        p99 = times[min(len(times) - 1, int(0.99 * len(times)))]
        print(f"| {kind} | {len(times)} | {statistics.median(times):.1f} | {p99:.1f} | {dict(codes)} |")
    print(f"server memory (RSS, all its processes): start {memory['start']:.0f} MB, middle {memory.get('middle', float('nan')):.0f} MB, "
          f"end {memory['end']:.0f} MB")
    failed = sum(1 for k, c, _ in results if k == "good" and c != 200)
    if failed or any(code >= 500 for code in statuses):
        raise SystemExit(f"{failed} well-formed request(s) failed; 5xx must be zero")


if __name__ == "__main__":
    main()
