"""Design e: latent-noise enhancement on MNIST -- variants of digits at several strengths.

    python examples/e_latent_noise_enhancement.py --data-dir ../shared/data/mnist -o example-out

Encodes test digits with the shipped `mnist-vae`, adds noise scaled by the
posterior's own spread times a strength (0, 0.5, 1, 2), decodes, and prints
how far the variants move (pixel spread) and how much they stay themselves
(PSNR to the reconstruction).  Writes one grid row per strength.
"""

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import mnist, parser  # noqa: E402

import vaekit  # noqa: E402
from vaekit.io import grid, upscale, write_image  # noqa: E402
from vaekit.metrics import psnr  # noqa: E402
from vaekit.tasks.augment import latent_variants  # noqa: E402

STRENGTHS = (0.0, 0.5, 1.0, 2.0)


def main(argv=None):
    ap = parser(__doc__)
    ap.add_argument("--model", default="mnist-vae")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model = vaekit.load_model(args.model)
    x, _ = mnist(args, "test", 8)
    rows, figures = [], {}
    recon = model.reconstruct(x)
    for s in STRENGTHS:
        v = latent_variants(model, x, 8, strength=s, seed=args.seed)  # (8 digits, 8 variants, 1, 28, 28)
        spread = float(v.std(1).mean())
        fidelity = float(psnr(v.flatten(0, 1), recon.repeat_interleave(8, 0)).mean())
        figures[s] = {"pixel_spread": spread, "psnr_to_reconstruction": fidelity}
        rows.append(v[:, :8].flatten(0, 1)[:16])
        print(f"strength {s:.1f}: variant spread {spread:.4f}, PSNR to the reconstruction {fidelity:.2f} dB")
    out = Path(args.output)
    write_image(out / "e_variants.png", upscale(grid(torch.cat(rows), nrow=16), 2))
    print(
        f"wrote {out / 'e_variants.png'} (rows: strengths {', '.join(map(str, STRENGTHS))}); "
        f"{time.perf_counter() - t0:.0f} s"
    )
    return figures


if __name__ == "__main__":
    main()
