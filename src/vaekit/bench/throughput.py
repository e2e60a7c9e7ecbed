"""``vaekit bench throughput``: images/s and MP/s of the folder commands, with 1 process and with torchrun.

Each task runs as the user runs it, ``vaekit TASK FOLDER -o OUT``, one thread per process; more processes
go through ``torchrun --standalone --nproc_per_node P``.  Reported per run: the wall time of the whole command
(start-up and model loading included) and the steady rate, inputs over the span from the first input's start
to the last one's finish in the manifest.  The outputs of every P-process run are compared byte for byte with
the 1-process run's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..errors import VaekitError
from .common import command_line, options, provenance, save_figure, write_results

# task -> extra CLI arguments (decompress reads the compress run's files)
TASKS = {
    "compress": ["--quality", "4"],
    "decompress": [],
    "denoise": ["--sigma", "25"],
    "inpaint": ["--box", "200,150,300,250"],
    "compensate": ["--method", "gray-world"],
}

DEFAULTS = {
    "quiet": False,
    "threads": None,
    "argv": (),
    "data_dir": None,
    "tasks": ",".join(TASKS),
    "processes": "1,2",
    "limit": None,
    "device": "cpu",
    "output": "results",
}


def _command(task: str, src: Path, out: Path, procs: int, device: str) -> list[str]:
    cli = ["-m", "vaekit", task, str(src), "-o", str(out), *TASKS[task], "--threads", "1", "--quiet"]
    cli += ["--device", device]
    if procs == 1:
        return [sys.executable, *cli]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs), *cli]


def _steady(out: Path) -> float | None:
    """Inputs per second between the first input's start and the last input's finish."""
    from ..batch import read_manifest

    rows = [r for r in read_manifest(out).values() if r.get("status") == "done"]
    if len(rows) < 2:
        return None
    span = max(r["finished"] for r in rows) - min(r["finished"] - r["seconds"] for r in rows)
    return len(rows) / span if span > 0 else None


def _same_outputs(a: Path, b: Path) -> bool:
    def files(root):
        return {p.relative_to(root): p for p in root.rglob("*") if p.is_file() and p.name != "manifest.jsonl"}

    fa, fb = files(a), files(b)
    return fa.keys() == fb.keys() and all(fa[k].read_bytes() == fb[k].read_bytes() for k in fa)


def run(**kwargs) -> dict:
    """Run the benchmark with ``DEFAULTS`` updated by ``kwargs``; writes results/throughput.* and returns it."""
    args = options(kwargs, DEFAULTS)
    from PIL import Image

    from ..data import find_images

    if not args.data_dir or not Path(args.data_dir).is_dir():
        raise VaekitError(f"--data-dir {args.data_dir} is not a folder")
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    for t in tasks:
        if t not in TASKS:
            raise VaekitError(f"unknown task {t!r}; known: {', '.join(TASKS)}")
    if "decompress" in tasks and "compress" not in tasks:
        raise VaekitError("decompress reads the compress run's files: list compress too")
    procs = sorted({int(p) for p in args.processes.split(",")})
    if procs[0] != 1:
        raise VaekitError("--processes must include 1 (the reference run)")
    files = find_images(args.data_dir)[: args.limit or None]
    if not files:
        raise VaekitError(f"no images under {args.data_dir}")
    mp = sum(Image.open(f).size[0] * Image.open(f).size[1] for f in files) / 1e6
    log = (lambda *a: None) if args.quiet else (lambda *a: print(*a, flush=True))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    rows = []
    with tempfile.TemporaryDirectory(prefix="vaekit-throughput-") as tmp:
        src = Path(tmp) / "in"
        src.mkdir()
        for f in files:
            (src / f.name).symlink_to(f.resolve())
        for task in tasks:
            for p in procs:
                inp = Path(tmp) / f"compress-{p}" if task == "decompress" else src
                out = Path(tmp) / f"{task}-{p}"
                t0 = time.perf_counter()
                r = subprocess.run(_command(task, inp, out, p, args.device), env=env, capture_output=True, text=True)
                wall = time.perf_counter() - t0
                if r.returncode != 0:
                    raise VaekitError(f"{task} with {p} process(es) failed: {r.stderr.strip().splitlines()[-1:]}")
                steady = _steady(out)
                row = {
                    "task": task,
                    "processes": p,
                    "images": len(files),
                    "megapixels": round(mp, 3),
                    "wall_s": round(wall, 2),
                    "images_per_s": round(len(files) / wall, 3),
                    "mp_per_s": round(mp / wall, 3),
                    "steady_images_per_s": round(steady, 3) if steady else None,
                    "same_as_1_process": True if p == 1 else _same_outputs(out, Path(tmp) / f"{task}-1"),
                }
                rows.append(row)
                log(f"  {task} x{p}: {row['wall_s']} s, {row['images_per_s']} images/s")
    for row in rows:
        one = next(r for r in rows if r["task"] == row["task"] and r["processes"] == 1)
        row["speedup"] = round(one["wall_s"] / row["wall_s"], 2)
        if row["steady_images_per_s"] and one["steady_images_per_s"]:
            row["steady_speedup"] = round(row["steady_images_per_s"] / one["steady_images_per_s"], 2)
    command = command_line(args)
    payload = {
        "task": "throughput",
        "set": Path(args.data_dir).name,
        "n_images": len(files),
        "command": command,
        "device": args.device,
        "protocol": "each task run as `vaekit TASK FOLDER -o OUT --threads 1`; P > 1 through torchrun --standalone; "
        "wall = the whole command; steady = inputs over first start to last finish in the manifest",
        "provenance": provenance({}),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "results": rows,
    }
    md = [
        "| task | processes | images/s | MP/s | wall s | speed-up | steady images/s | steady speed-up | same bytes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        md.append(
            f"| {r['task']} | {r['processes']} | {r['images_per_s']:.3f} | {r['mp_per_s']:.3f} | {r['wall_s']:.1f} | "
            f"{r['speedup']:.2f}x | {r['steady_images_per_s'] or float('nan'):.3f} | "
            f"{r.get('steady_speedup', float('nan')):.2f}x | {'yes' if r['same_as_1_process'] else 'NO'} |"
        )
    md += [
        "",
        f"{len(files)} images of {payload['set']} ({mp:.1f} MP), {args.device}, one thread per process, "
        f"{payload['cores']} cores.",
        "",
        f"Reproduce: `{command}`",
        "",
    ]
    out_dir = Path(args.output)
    write_results(out_dir, "throughput", payload, "\n".join(md))
    _plot(rows, out_dir / "throughput.png")
    print("\n".join(md))
    return payload


def _plot(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(r["task"] for r in rows))
    procs = sorted({r["processes"] for r in rows})
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    width = 0.8 / len(procs)
    for j, p in enumerate(procs):
        vals = [next(r["mp_per_s"] for r in rows if r["task"] == t and r["processes"] == p) for t in tasks]
        ax.bar([i + j * width for i in range(len(tasks))], vals, width, label=f"{p} process{'es' if p > 1 else ''}")
    ax.set_xticks([i + width * (len(procs) - 1) / 2 for i in range(len(tasks))], tasks)
    ax.set_ylabel("MP/s (whole command)")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)
