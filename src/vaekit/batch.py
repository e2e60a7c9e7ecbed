"""Folder runs at scale: every folder command maps its inputs through :func:`run`.

The sorted input list is split into shards, one per process: torchrun's ``RANK``/``WORLD_SIZE``, or
``--shard k/N`` for job arrays.  Shards are balanced by file size (largest first, each to the lightest
shard), so the split is deterministic and every input lands in exactly one shard.

``OUT/manifest.jsonl`` records one JSON line per finished input: its outputs with their size and sha256,
the status, the seconds taken, the task's figures and the settings that shaped them.  Every process appends to
it under an exclusive ``flock``; a rerun appends a new line for what it redoes and readers keep each input's last
line.  A rerun skips an input whose line says done with the same settings, whose input files (the image and any
mask it read) still have the size and modification time they had, and whose outputs still have that size and
hash, so a killed run (``kill -9``, a lost node, an elastic restart) loses only the files in flight, and a rerun
with other settings or changed inputs redoes what they made.  Outputs are written
under a temporary name and renamed; temporaries left by dead writers on this host are removed at start.
One bad input is logged with its one-line error and skipped; the command then exits with
:data:`FAILED_EXIT`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .errors import VaekitError

FAILED_EXIT = 3  # the run finished, but some inputs failed (listed in the manifest)
MANIFEST = "manifest.jsonl"


@dataclass(frozen=True)
class Item:
    """One input: its file, its name relative to the input folder, and its main output (file or folder)."""

    input: Path
    rel: str
    output: Path


@dataclass
class Summary:
    """What one process did: manifest rows of the inputs it finished now, and counts."""

    rows: list = field(default_factory=list)
    skipped: int = 0
    changed: int = 0  # inputs done before with other settings, redone now
    updated: int = 0  # inputs done before whose files changed since, redone now
    failed: list = field(default_factory=list)
    seconds: float = 0.0
    total: int = 0  # inputs in the whole folder, all shards
    merged: dict | None = None  # torchrun's rank 0: :func:`summarize` of the whole folder once all shards are done


def plan(
    src, dst, files: list[Path], name: Callable[[Path], Path], *, into: bool = True, check: Callable | None = None
) -> list[Item]:
    """Items for ``files`` found under ``src``: a folder maps to ``dst`` with ``name(relative path)``;
    a single file maps to ``dst`` (or, with ``into``, into it if ``dst`` is a folder), which ``check`` (the
    writer's test of a file name) passes or refuses before any work.  Files in an output folder that lies inside
    ``src`` are outputs, never inputs.  Two inputs that would write the same output, and an output that would
    overwrite its own input, are refused."""
    src, dst = Path(src), Path(dst)
    if src.is_file():
        out = dst / name(Path(src.name)) if into and dst.is_dir() else dst
        if check is not None:
            check(out)
        return _not_in_place([Item(src, src.name, out)])
    if dst.exists() and not dst.is_dir():
        raise VaekitError(f"{dst} exists and is not a folder (the input is a folder)")
    items, seen = [], {}
    inner = _inside(dst, src)  # an output folder inside the input folder: its files are outputs, not inputs
    for f in files:
        rel = f.relative_to(src)
        if inner and rel.parts[: len(inner)] == inner:
            continue
        out = dst / name(rel)
        if out in seen:
            raise VaekitError(f"{seen[out]} and {f} would both write {out}; rename one of them")
        seen[out] = f
        items.append(Item(f, rel.as_posix(), out))
    if files and not items:
        raise VaekitError(f"every file under {src} lies in the output folder {dst}: nothing to do")
    return _not_in_place(items)


def _inside(dst: Path, src: Path) -> tuple[str, ...]:
    """The parts of ``dst`` below ``src`` when ``dst`` is a folder strictly inside it, else ()."""
    d, s = dst.resolve(), src.resolve()
    return d.relative_to(s).parts if d != s and s in d.parents else ()


def _not_in_place(items: list[Item]) -> list[Item]:
    for it in items:
        if it.output.resolve() == it.input.resolve():
            raise VaekitError(f"the output {it.output} would overwrite its input: write it to another name or folder")
    return items


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"k/N"`` (0 <= k < N), else torchrun's RANK/WORLD_SIZE, else (0, 1)."""
    if text is None:
        return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not m or not int(m[1]) < int(m[2]):
        raise VaekitError(f"--shard {text!r}: give k/N with 0 <= k < N, e.g. 3/100")
    return int(m[1]), int(m[2])


def balance(sizes: list[int], n: int) -> list[list[int]]:
    """Indices of each of ``n`` shards: largest first, each to the shard with the fewest bytes so far
    (ties to the lower shard); each shard's indices sorted."""
    load = [0] * n
    shards: list[list[int]] = [[] for _ in range(n)]
    for i in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        k = min(range(n), key=lambda s: (load[s], s))
        load[k] += sizes[i]
        shards[k].append(i)
    return [sorted(s) for s in shards]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_manifest(out) -> dict[str, dict]:
    """The manifest under ``out`` merged: each input's last line, by its relative name.  A torn last
    line (a writer killed mid-line) is ignored."""
    path = Path(out) / MANIFEST
    rows: dict[str, dict] = {}
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            try:
                row = json.loads(line)
                rows[row["rel"]] = row
            except (ValueError, KeyError, TypeError):
                continue
    return rows


def _append(path: Path, row: dict) -> None:
    line = (json.dumps(row) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX)
        except ImportError:  # no flock on this platform: one writer at a time is up to the user
            pass
        os.write(fd, line)
    finally:
        os.close(fd)


def settings_of(**options) -> dict:
    """The options that shape a folder run's outputs as its manifest keeps them (JSON): paths as text, a model
    object by its card's name or else its type."""

    def plain(v):
        if isinstance(v, Path):
            return str(v)
        return (getattr(v, "card", None) or {}).get("name") or type(v).__name__

    return json.loads(json.dumps(options, sort_keys=True, default=plain))


def _done_as(row: dict | None, settings: dict | None) -> bool:
    """Whether a manifest row says done with ``settings`` (a line from before settings were kept: as it was)."""
    return bool(row) and row.get("status") == "done" and row.get("settings", settings) == settings


def _stamps(paths) -> list[dict]:
    """What a rerun compares to tell whether input files changed: each one's path, size and modification time
    (as make does; reading every input again would cost as much as the run)."""
    out = []
    for p in map(Path, paths):
        st = p.stat() if p.exists() else None
        out.append({"path": str(p), "bytes": st.st_size if st else None, "mtime_ns": st.st_mtime_ns if st else None})
    return out


def _same_files(old: list[dict], new: list[dict]) -> bool:
    """Whether two :func:`_stamps` describe the same contents: sizes and times, not paths (a moved folder is the
    same input)."""
    return [(s["bytes"], s["mtime_ns"]) for s in old] == [(s["bytes"], s["mtime_ns"]) for s in new]


def _complete(row: dict | None, out: Path) -> bool:
    """Whether a manifest row says done and every output it lists still has its size and hash."""
    if not row or row.get("status") != "done":
        return False
    for f in row.get("files", []):
        p = out / f["path"]
        if not p.is_file() or p.stat().st_size != f["bytes"] or sha256_file(p) != f["sha256"]:
            return False
    return True


def _outputs(paths) -> list[Path]:
    """Files among ``paths``, folders expanded (a sample set is a folder)."""
    files = []
    for p in map(Path, paths):
        files += sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
    return files


def clean_temporaries(out: Path) -> int:
    """Remove temporary files under ``out`` left by writers on this host that no longer run."""
    from .io import TEMP_PATTERN, host_tag

    removed = 0
    if not out.is_dir():
        return 0
    for p in out.rglob("*.tmp"):
        m = TEMP_PATTERN.fullmatch(p.name)
        if not m or m["host"] != host_tag():
            continue
        try:
            os.kill(int(m["pid"]), 0)
            continue  # that writer is alive
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        if p.is_dir():  # a sample set written as a folder
            import shutil

            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed += 1
    return removed


class _Progress:
    """One bar per node (local rank 0): the global count, from the manifest lines every shard appends."""

    def __init__(self, path: Path, total: int, done: int, show: bool):
        self.path, self.total, self.count = path, total, done
        self.offset = path.stat().st_size if path.is_file() else 0
        self.bar = None
        if show:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, unit="img", dynamic_ncols=True, leave=False)
        self.last = 0.0

    def poll(self, force=False) -> int:
        now = time.monotonic()
        if not force and now - self.last < 0.5:
            return self.count
        self.last = now
        if self.path.is_file():
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                new = f.read()
            whole = new[: new.rfind(b"\n") + 1]
            self.offset += len(whole)
            n = whole.count(b"\n")
            self.count += n
            if self.bar is not None and n:
                self.bar.update(n)
        return self.count

    def close(self):
        if self.bar is not None:
            self.bar.close()


def plan_images(src, dst, *, folders: bool = False, into: bool = True) -> list[Item]:
    """:func:`plan` for the images of a file or folder ``src`` (``vaekit.data.find_images``): each to a PNG of
    the same relative name under ``dst`` (a single image to ``dst``, in the format its name gives), or with
    ``folders`` to a folder of that name (a single image's is ``dst``)."""
    from .data import find_images
    from .io import check_output_name

    src, dst = Path(src), Path(dst)
    files = find_images(src)
    if not files:
        raise VaekitError(f"no images found under {src}")
    name = (lambda rel: rel.with_suffix("")) if folders else (lambda rel: rel.with_suffix(".png"))
    return plan(src, dst, files, name, into=into, check=None if folders else check_output_name)


def run_images(
    src, dst, work: Callable, *, settings=None, shard=None, overwrite=False, progress=False, alpha=False
) -> Summary:
    """:func:`run` over :func:`plan_images` of ``src``; ``work(item, image array)`` writes the output and
    returns (paths, figures).  ``alpha``: work gets (image, its alpha plane or None), to hand the transparency
    back."""
    from .io import read_array, read_with_alpha

    items = plan_images(src, dst)
    opts = {"settings": settings, "shard": shard, "overwrite": overwrite, "progress": progress}
    read = (lambda it: read_with_alpha(it.input)) if alpha else (lambda it: read_array(it.input))
    return run(items, work, read=read, out=dst, folder=Path(src).is_dir(), **opts)


def run(
    items: list[Item],
    work: Callable,
    *,
    read: Callable,
    out,
    folder: bool,
    settings: dict | None = None,
    sources: Callable | None = None,
    shard: str | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> Summary:
    """Run ``work(item, read(item))`` over this process's shard of ``items``; ``work`` writes the
    outputs and returns ``(paths written, figures)``.  Reads run one item ahead in a thread.

    ``folder`` False (a single-file input): no manifest, and an error stops the command.  ``settings``: the
    options that shape the outputs (:func:`settings_of`); an input done with others is redone.  ``sources(item)``:
    the files an item reads besides its input (a mask); an input whose files changed since is redone."""
    out = Path(out)
    t0 = time.perf_counter()
    summary = Summary(total=len(items))
    if not folder:
        for it in items:
            t = time.perf_counter()
            paths, figures = work(it, read(it))
            seconds = round(time.perf_counter() - t, 4)
            summary.rows.append({"input": str(it.input), "output": str(it.output), **figures, "seconds": seconds})
        summary.seconds = time.perf_counter() - t0
        return summary

    k, n = parse_shard(shard)
    sizes = [it.input.stat().st_size if it.input.exists() else 0 for it in items]
    mine = [items[i] for i in balance(sizes, n)[k]]
    out.mkdir(parents=True, exist_ok=True)
    clean_temporaries(out)
    manifest = out / MANIFEST
    previous = {} if overwrite else read_manifest(out)
    todo, stamp = [], {}
    for it in mine:
        row = previous.get(it.rel)
        stamp[it.rel] = _stamps([it.input, *(sources(it) if sources else [])])
        if _done_as(row, settings):
            if not _same_files(row.get("sources", stamp[it.rel]), stamp[it.rel]):  # changed: redone, outputs not read
                summary.updated += 1
            elif _complete(row, out):
                summary.skipped += 1
                continue
        elif row and row.get("status") == "done":  # made with other settings: redone, its files not read
            summary.changed += 1
        todo.append(it)
    done_before = sum(1 for it in items if _done_as(previous.get(it.rel), settings))
    show = progress and int(os.environ.get("LOCAL_RANK", 0)) == 0
    bar = _Progress(manifest, len(items) if n > 1 else len(mine), done_before if n > 1 else summary.skipped, show)
    host = socket.gethostname()

    def safe_read(it):
        try:
            return read(it), None
        except VaekitError as e:
            return None, e

    with ThreadPoolExecutor(max_workers=1) as pool:
        ahead = pool.submit(safe_read, todo[0]) if todo else None
        for j, it in enumerate(todo):
            data, err = ahead.result()
            ahead = pool.submit(safe_read, todo[j + 1]) if j + 1 < len(todo) else None
            t = time.perf_counter()
            row = {"rel": it.rel, "input": str(it.input), "output": str(it.output), "shard": f"{k}/{n}", "host": host}
            try:
                if err is not None:
                    raise err
                paths, figures = work(it, data)
                files = [
                    {"path": p.relative_to(out).as_posix(), "bytes": p.stat().st_size, "sha256": sha256_file(p)}
                    for p in _outputs(paths)
                ]
                row.update(figures)  # the task's figures; the runner's own fields win
                row.update(status="done", files=files, sources=stamp[it.rel])
                if settings is not None:
                    row["settings"] = settings
                summary.rows.append(row)
            except VaekitError as e:
                row.update(status="failed", error=str(e))
                summary.failed.append(row)
            row.update(seconds=round(time.perf_counter() - t, 4), finished=time.time())
            _append(manifest, row)
            bar.poll()
    if n > 1 and shard is None and k == 0:  # torchrun: rank 0 waits for the other shards, then sums up
        while bar.poll(force=True) < len(items) or _missing(out, items):
            time.sleep(0.5)
        summary.merged = summarize(out)
    bar.poll(force=True)
    bar.close()
    summary.seconds = time.perf_counter() - t0
    return summary


def _distinct(values: list[dict]) -> list[dict]:
    """Each distinct settings dict once, in the order first seen, with how many inputs it made (``inputs``)."""
    seen: dict[str, dict] = {}
    for v in values:
        key = json.dumps(v, sort_keys=True)
        seen.setdefault(key, {"settings": v, "inputs": 0})["inputs"] += 1
    return list(seen.values())


def _missing(out: Path, items: list[Item]) -> bool:
    rows = read_manifest(out)
    return any(it.rel not in rows for it in items)


def summarize(out) -> dict:
    """Counts and time over the merged manifest under ``out`` (for ``vaekit manifest``); ``out`` may also name
    one of its manifest files."""
    out = Path(out)
    if out.is_file() and out.suffix == ".jsonl":
        out = out.parent
    rows = list(read_manifest(out).values())
    if not rows and not (Path(out) / MANIFEST).is_file():
        raise VaekitError(f"no {MANIFEST} in {out}: not the output folder of a folder run")
    done = [r for r in rows if r.get("status") == "done"]
    failed = [r for r in rows if r.get("status") == "failed"]
    return {
        "inputs": len(rows),
        "done": len(done),
        "failed": len(failed),
        "seconds": round(sum(r.get("seconds", 0.0) for r in rows), 3),
        "bytes": sum(f["bytes"] for r in done for f in r.get("files", [])),
        "shards": sorted({r.get("shard", "0/1") for r in rows}),
        "settings": _distinct([r["settings"] for r in done if "settings" in r]),
        "failures": [{"input": r["input"], "error": r.get("error", "")} for r in failed],
    }
