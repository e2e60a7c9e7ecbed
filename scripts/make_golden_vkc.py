"""Write the golden .vkc fixture (tests/data/golden/): run once per format version, never to "fix" a test.

A tiny mean-scale codec with seeded random weights codes a rendered image; the
test decodes the committed file and must get the committed pixels, so a later
change to the format, the tables or the integer path cannot pass silently.
``--checkerboard`` adds the same for the checkerboard context: the tiny codec's
tensors plus seeded context weights (a few KB beside it); ``--version-3`` a
version 3 file of the same image with a colour profile and an alpha plane.

    python scripts/make_golden_vkc.py [--checkerboard | --version-3] [--force]
"""

import sys
from pathlib import Path

import numpy as np
import torch

from vaekit import create_model
from vaekit.io import write_image
from vaekit.pretrained import save_model
from vaekit.tasks.compress import compress, decompress

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "golden"
ARGS = dict(N=8, M=8, lambdas=[0.005, 0.05])


def rendered_image(h=96, w=160):
    """A deterministic test picture: gradients, a disc and stripes (ours to ship)."""
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    r = xx / w
    g = yy / h
    b = ((np.hypot(yy - h / 2, xx - w / 3) < h / 4) * 0.8 + 0.1 * (np.sin(xx / 3) > 0)).astype(np.float32)
    return (np.stack([r, g, np.clip(b, 0, 1)], axis=2) * 255).round().astype(np.uint8)


def checkerboard():
    from safetensors.torch import save_file

    from vaekit.pretrained import load_from_files

    if (OUT / "golden-checkerboard.vkc").exists() and "--force" not in sys.argv:
        sys.exit("the checkerboard golden files exist; old golden files must stay")
    tiny = load_from_files(OUT / "tiny-codec.safetensors", OUT / "tiny-codec.json")
    model = create_model("codec-checkerboard", **ARGS)
    model.load_state_dict(tiny.state_dict(), strict=False)
    torch.manual_seed(1)
    with torch.no_grad():
        for name in ("ep.2.weight", "ep.2.bias"):  # zero at creation: the context would not show
            model.get_parameter(name).normal_(0, 0.05)
    extra = {k: v.contiguous() for k, v in model.state_dict().items() if k.startswith(("ctx.", "ep."))}
    save_file(extra, str(OUT / "checkerboard-context.safetensors"))
    model.eval()  # the tables stay the tiny codec's
    data = compress(rendered_image(), 2, model=model, tile=64)
    (OUT / "golden-checkerboard.vkc").write_bytes(data)
    write_image(OUT / "golden-checkerboard-decoded.png", decompress(data, model=model))
    print(f"wrote the checkerboard files in {OUT} ({len(data)} bytes)")


GOLDEN_PROFILE = bytes(range(256)) * 2  # stored and handed back as bytes: no colour engine reads it here


def golden_alpha(h=96, w=160):
    """The version 3 fixture's alpha plane: opaque, a transparent band, a ramp between."""
    a = np.full((h, w), 255, np.uint8)
    a[:, :24] = 0
    a[:, 24:56] = np.linspace(0, 255, 32).round().astype(np.uint8)
    return a


def version_3():
    from vaekit.pretrained import load_from_files

    if (OUT / "golden-v3.vkc").exists() and "--force" not in sys.argv:
        sys.exit("the version 3 golden files exist; old golden files must stay")
    model = load_from_files(OUT / "tiny-codec.safetensors", OUT / "tiny-codec.json")
    data = compress(np.dstack([rendered_image(), golden_alpha()]), 2, model=model, tile=64, icc=GOLDEN_PROFILE)
    (OUT / "golden-v3.vkc").write_bytes(data)
    write_image(OUT / "golden-v3-decoded.png", decompress(data, model=model))  # RGBA
    print(f"wrote the version 3 files in {OUT} ({len(data)} bytes)")


def main():
    if "--checkerboard" in sys.argv:
        return checkerboard()
    if "--version-3" in sys.argv:
        return version_3()
    if OUT.exists() and "--force" not in sys.argv:
        sys.exit(f"{OUT} exists; old golden files must stay (pass --force only for a new format version)")
    torch.manual_seed(0)
    model = create_model("codec-mean-scale-hyperprior", **ARGS).eval()
    save_model(
        model, OUT, {"name": "golden-tiny", "note": "random weights, seed 0; test fixture only"}, stem="tiny-codec"
    )
    from vaekit.pretrained import load_from_files

    model = load_from_files(OUT / "tiny-codec.safetensors", OUT / "tiny-codec.json")
    img = rendered_image()
    write_image(OUT / "image.png", img)
    data = compress(img, 2, model=model, tile=64)
    (OUT / "golden.vkc").write_bytes(data)
    write_image(OUT / "golden-decoded.png", decompress(data, model=model))
    print(f"wrote {OUT} ({len(data)} bytes)")


if __name__ == "__main__":
    main()
