"""What every benchmark shares: provenance, the thread rule, set parsing, options, the classical-result cache,
test-set loading and the results writer (JSON + markdown under results/)."""

from __future__ import annotations

import hashlib
import io
import json
import platform
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from .. import __version__
from ..errors import VaekitError


def options(given: dict, defaults: dict) -> SimpleNamespace:
    """A benchmark's settings: ``defaults`` updated by the keyword arguments ``given`` (unknown keys refused)."""
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise VaekitError(f"unknown benchmark option {unknown[0]!r}; known: {', '.join(sorted(defaults))}")
    return SimpleNamespace(**{**defaults, **given})


def command_line(opts) -> str:
    """The command that reproduces a run: the CLI's own argv when it came from the CLI."""
    import shlex

    return "vaekit " + " ".join(shlex.quote(a) for a in opts.argv) if opts.argv else "(Python API)"


def provenance(seeds: dict, weights_sha256: str | None = None) -> dict:
    import numpy
    import PIL

    try:
        sha = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        sha = None
    from ..training.loop import cpu_name

    cpu = cpu_name()
    return {
        "vaekit": __version__,
        "git_sha": sha,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "pillow": PIL.__version__,
        "cpu": cpu,
        "threads": torch.get_num_threads(),
        "seeds": seeds,
        "weights_sha256": weights_sha256,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def single_threaded(threads: int) -> None:
    """The benchmarks' thread rule: torch and OpenCV get the same ``threads`` (default 1)."""
    torch.set_num_threads(threads)
    try:
        import cv2

        cv2.setNumThreads(threads)
    except ImportError:
        pass


def parse_sets(text: str, known, root: Path | None = None) -> list[str]:
    """``--sets a,b`` checked against the ``known`` set names; with ``root``, a folder of one's own images
    under it is a set too."""
    sets = [s.strip() for s in text.split(",") if s.strip()]
    for s in sets:
        if s not in known and not (root is not None and s not in (".", "..") and (Path(root) / s).is_dir()):
            mine = f", or a folder of clean images under {root}" if root is not None else ""
            raise VaekitError(f"unknown set {s!r}; known: {', '.join(known)}{mine}")
    return sets


def picture_row(path: Path, panels, *, width: float = 2.0, dpi: int = 110) -> None:
    """One row of images with a title under each (``panels``: (title, H x W [x 3] array in [0, 1])), written
    as PNG atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, len(panels), figsize=(width * len(panels), 2.4))
    for ax, (title, img) in zip(np.atleast_1d(axes), panels):
        img = np.clip(img, 0, 1)
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    save_figure(fig, path, dpi=dpi)


def save_png(img: np.ndarray, path: Path) -> None:
    """An H x W x 3 uint8 picture as a 128-colour PNG (a quarter of the bytes of full colour; the benchmarks'
    pictures illustrate, the JSON holds the figures), written atomically."""
    from PIL import Image

    from ..io import atomic_write_text

    im = Image.fromarray(np.ascontiguousarray(img[..., :3])).quantize(
        128, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
    )
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, buf.getvalue())


def save_figure(fig, path: Path, dpi: int = 100) -> None:
    """A matplotlib figure as a 128-colour PNG (:func:`save_png`); the figure is closed."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    from PIL import Image

    save_png(np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")), path)


PER_ITEM_KEYS = ("per_image", "per_image_nll", "per_seed", "results")  # the bulky per-image data


def _significant(v, digits: int = 6):
    """``v`` with every float rounded to ``digits`` significant digits (per-image figures: a third of the bytes)."""
    if isinstance(v, float):
        return float(f"{v:.{digits}g}")
    if isinstance(v, dict):
        return {k: _significant(x, digits) for k, x in v.items()}
    if isinstance(v, list):
        return [_significant(x, digits) for x in v]
    return v


def write_results(out_dir: Path, stem: str, payload: dict, table_md: str) -> None:
    """``<stem>.json`` (summary, provenance, command), ``<stem>.per_image.json.xz`` (the per-image data to 6
    significant digits, xz: the bulk of a run, kept so tables can be recomputed) and the markdown table
    ``<stem>.md``, each atomically."""
    import lzma

    from ..io import atomic_write_text

    out_dir.mkdir(parents=True, exist_ok=True)
    bulk = {k: payload[k] for k in PER_ITEM_KEYS if k in payload}
    head = {k: v for k, v in payload.items() if k not in bulk}
    if bulk:
        head["per_image_file"] = f"{stem}.per_image.json.xz"
        raw = json.dumps(_significant(bulk), separators=(",", ":")).encode()
        raw = lzma.compress(raw, preset=9 | lzma.PRESET_EXTREME)
        atomic_write_text(out_dir / head["per_image_file"], raw)
    atomic_write_text(out_dir / f"{stem}.json", json.dumps(head, indent=1) + "\n")
    atomic_write_text(out_dir / f"{stem}.md", table_md)


def read_results(path: str | Path) -> dict:
    """A results JSON with its per-image data joined back (what the benchmark returned when it wrote it)."""
    import lzma

    path = Path(path)
    head = json.loads(path.read_text())
    side = head.pop("per_image_file", None)
    if side:
        head.update(json.loads(lzma.decompress((path.parent / side).read_bytes())))
    return head


class Cache:
    """Classical results keyed by (method, parameters, condition, noisy-input hash)."""

    def __init__(self, path: Path):
        self.path = path
        self.data = {}
        if path.is_file():
            for line in path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                    self.data[rec["key"]] = rec["value"]
                except (ValueError, KeyError):
                    continue

    @staticmethod
    def key(method, cond, noisy_sha, params=None):
        return hashlib.sha256(json.dumps([method, params, cond, noisy_sha]).encode()).hexdigest()

    def get(self, k):
        return self.data.get(k)

    def put(self, k, v):
        self.data[k] = v
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps({"key": k, "value": v}) + "\n")


SET_SUFFIXES = (".png", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg", ".webp")


def set_is_gray(path) -> bool:
    """True where every image of a folder set (``load_set``'s files) is gray: it is then measured in gray."""
    from PIL import Image

    files = [p for p in Path(path).iterdir() if p.suffix.lower() in SET_SUFFIXES]
    gray = True
    for f in files:
        with Image.open(f) as im:
            gray = gray and im.mode in ("1", "L", "LA", "I", "I;16", "F")
    return gray and bool(files)


def load_set(path, mode: str) -> list[tuple[str, np.ndarray]]:
    """(name, float64 image in [0, 1]) for every PNG/BMP/TIF/JPEG/WebP in ``path``, in name order."""
    from PIL import Image

    d = Path(path)
    if not d.is_dir():
        raise VaekitError(f"{d} is not a folder")
    files = sorted(p for p in d.iterdir() if p.suffix.lower() in SET_SUFFIXES)
    if not files:
        raise VaekitError(f"no images in {d}")
    out = []
    for f in files:
        im = Image.open(f)
        out.append((f.name, np.asarray(im.convert(mode), dtype=np.float64) / 255.0))
    return out
