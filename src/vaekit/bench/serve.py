"""``vaekit bench serve``: a load test of ``vaekit serve`` on loopback -> results/serve-load.{json,md}.

The server runs in this process (uvicorn in a thread) on a free port.  ``clients`` threads post a small
denoising request in a loop for ``seconds`` seconds and stop by themselves.  Reported: requests by status,
latency percentiles of the answered ones (200) and of all, and whether the server still answers afterwards.
Nothing may be lost: every request gets a status (200, or 503 when the queue is full).
"""

from __future__ import annotations

import io
import socket
import statistics
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import numpy as np

from .common import command_line, options, provenance, write_results

DEFAULTS = {
    "quiet": False,
    "threads": None,
    "argv": (),
    "clients": 8,
    "seconds": 20.0,
    "size": 128,
    "queue": 4,
    "device": "cpu",
    "output": "results",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _multipart(fields: dict, files: dict) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    out = io.BytesIO()
    for k, v in fields.items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode())
    for k, (name, data, ctype) in files.items():
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"; filename="{name}"\r\n'
        out.write(f"{head}Content-Type: {ctype}\r\n\r\n".encode() + data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def _percentiles(values: list[float]) -> dict:
    if not values:
        return {"p50": None, "p90": None, "p99": None, "max": None}
    q = np.percentile(values, [50, 90, 99])
    return {
        "p50": round(float(q[0]), 3),
        "p90": round(float(q[1]), 3),
        "p99": round(float(q[2]), 3),
        "max": round(max(values), 3),
    }


def run(**kwargs) -> dict:
    """Run the load test with ``DEFAULTS`` updated by ``kwargs``; writes results/serve-load.* and returns it."""
    args = options(kwargs, DEFAULTS)
    import uvicorn
    from PIL import Image

    from ..serve import create_app

    asgi, _ = create_app(queue=args.queue, device=None if args.device in (None, "auto") else args.device)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(asgi, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    rng = np.random.default_rng(0)
    img = (rng.random((args.size, args.size, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    body, ctype = _multipart({"sigma": "25"}, {"image": ("load.png", buf.getvalue(), "image/png")})
    results: list[tuple[int, float]] = []
    lock = threading.Lock()
    stop = time.time() + args.seconds

    def client():
        while time.time() < stop:
            req = urllib.request.Request(f"{base}/api/denoise", data=body, headers={"Content-Type": ctype})
            t0 = time.perf_counter()
            try:
                with urllib.request.urlopen(req, timeout=120) as r:
                    r.read()
                    status = r.status
            except urllib.error.HTTPError as e:
                status = e.code
                if status == 503:
                    time.sleep(0.2)  # a polite client waits a moment before it tries again
            except OSError:
                status = 0  # no answer at all: counted as lost
            with lock:
                results.append((status, time.perf_counter() - t0))

    clients = [threading.Thread(target=client) for _ in range(args.clients)]
    t0 = time.perf_counter()
    for c in clients:
        c.start()
    for c in clients:
        c.join()
    wall = time.perf_counter() - t0
    try:
        with urllib.request.urlopen(f"{base}/api/info", timeout=10) as r:
            alive = r.status == 200
    except OSError:
        alive = False
    server.should_exit = True
    thread.join(timeout=10)
    by_status: dict[str, int] = {}
    for s, _ in results:
        by_status[str(s)] = by_status.get(str(s), 0) + 1
    ok = [t for s, t in results if s == 200]
    command = command_line(args)
    payload = {
        "task": "serve-load",
        "set": f"synthetic {args.size}x{args.size} RGB PNG, POST /api/denoise sigma 25",
        "command": command,
        "clients": args.clients,
        "seconds": args.seconds,
        "queue": args.queue,
        "provenance": provenance({"image": 0}),
        "requests": len(results),
        "by_status": by_status,
        "lost": by_status.get("0", 0),
        "answered_per_s": round(len(ok) / wall, 3),
        "latency_200_s": _percentiles(ok),
        "latency_all_s": _percentiles([t for _, t in results]),
        "median_200_s": round(statistics.median(ok), 3) if ok else None,
        "alive_after": alive,
    }
    lat = payload["latency_200_s"]
    md = [
        "| clients | requests | 200 | 503 | lost | answered/s | p50 s | p90 s | p99 s | alive after |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| {args.clients} | {len(results)} | {by_status.get('200', 0)} | {by_status.get('503', 0)} | "
        f"{payload['lost']} | {payload['answered_per_s']} | {lat['p50']} | {lat['p90']} | {lat['p99']} | "
        f"{'yes' if alive else 'NO'} |",
        "",
        f"{args.seconds:g} s of {args.clients} clients on loopback, queue {args.queue}, "
        f"{payload['set']}; latencies of answered requests.",
        "",
        f"Reproduce: `{command}`",
        "",
    ]
    write_results(Path(args.output), "serve-load", payload, "\n".join(md))
    if not args.quiet:
        print("\n".join(md))
    return payload
