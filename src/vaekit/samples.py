"""Sample images the package may ship: rendered here, never copied from a data set."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont


def rendered_digits(digits: str = "0123456789", size: int = 28, seed: int = 0) -> torch.Tensor:
    """Digits drawn with Pillow's built-in font, MNIST-style: the glyph is
    scaled into a 20x20 box and centred by its centre of mass in a 28x28
    frame, with a small seeded slant and stroke-width variation.
    Returns (N, 1, size, size) in [0, 1]."""
    rng = np.random.default_rng(seed)
    font = ImageFont.load_default(size=96)
    out = []
    for d in digits:
        canvas = Image.new("L", (160, 160), 0)
        draw = ImageDraw.Draw(canvas)
        draw.text((80, 80), d, fill=255, font=font, anchor="mm", stroke_width=int(rng.integers(1, 4)), stroke_fill=255)
        shear = float(rng.uniform(-0.25, 0.05))
        canvas = canvas.transform(
            canvas.size, Image.Transform.AFFINE, (1, shear, -shear * 80, 0, 1, 0), resample=Image.Resampling.BILINEAR
        )
        box = canvas.getbbox()
        glyph = canvas.crop(box)
        scale = 20.0 / max(glyph.size)
        glyph = glyph.resize(
            (max(1, round(glyph.width * scale)), max(1, round(glyph.height * scale))), Image.Resampling.LANCZOS
        )
        g = np.asarray(glyph, dtype=np.float32) / 255.0
        ys, xs = np.indices(g.shape)
        cy, cx = (ys * g).sum() / g.sum(), (xs * g).sum() / g.sum()
        frame = np.zeros((size, size), np.float32)
        top, left = int(round(size / 2 - cy)), int(round(size / 2 - cx))
        top = min(max(top, 0), size - g.shape[0])
        left = min(max(left, 0), size - g.shape[1])
        frame[top : top + g.shape[0], left : left + g.shape[1]] = g
        out.append(np.clip(frame, 0, 1))
    return torch.from_numpy(np.stack(out)).unsqueeze(1)


SAMPLES_DIR = __import__("pathlib").Path(__file__).parent / "samples_data"


def sample_photo(name: str = "chelsea") -> np.ndarray:
    """A freely licensed photo shipped with the package (see samples_data/README.md), H x W x 3 uint8."""
    path = SAMPLES_DIR / f"{name}.png"
    if not path.is_file():
        from .errors import VaekitError

        names = sorted(p.stem for p in SAMPLES_DIR.glob("*.png"))
        raise VaekitError(f"no sample photo {name!r}; shipped: {', '.join(names)}")
    with Image.open(path) as im:
        return np.array(im.convert("RGB"))
