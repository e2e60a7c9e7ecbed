"""The ``vaekit`` command: thin argument parsing over the Python API.

Errors the user can fix are one line on stderr (``vaekit: error: ...``) and
exit code 2 (bad input) or 1 (failure while running); ``--debug`` shows the
traceback instead.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import warnings
from pathlib import Path

from .errors import VaekitError


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, as for every other bad input
        raise VaekitError(f"{self.prog.split(' ', 1)[-1] if ' ' in self.prog else 'vaekit'}: {message}")


OUT_IMAGE = "image to write, in the format its name gives (.png .tif .webp .jpg .bmp); a folder of PNGs for a folder"


def _at_least(low: int):
    """An argparse type: a whole number of at least ``low`` (``--limit 0`` would otherwise mean every image, and
    a tile under 64 pixels was silently raised to 64)."""

    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
        if n < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {n}")
        return n

    return parse


_count = _at_least(1)


def _strength(text: str):
    """``--strength``: one number, or LUMA,COLOUR (the task checks their range)."""
    try:
        parts = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"a number or LUMA,COLOUR, not {text!r}") from None
    if len(parts) not in (1, 2):
        raise argparse.ArgumentTypeError(f"a number or LUMA,COLOUR, not {text!r}")
    return parts[0] if len(parts) == 1 else tuple(parts)


def _common(p: argparse.ArgumentParser, *, device=True, seed=True):
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: all cores)")
    if device:
        p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto")
    if seed:
        p.add_argument("--seed", type=int, default=0)


def _folder(p: argparse.ArgumentParser):
    """Options of every folder command (see vaekit.batch): sharding and redoing."""
    p.add_argument(
        "--shard", default=None, metavar="K/N", help="do shard K of N (job arrays); default: torchrun's RANK/WORLD_SIZE"
    )
    p.add_argument("--overwrite", action="store_true", help="redo inputs the manifest lists as done")


def _classical(task: str) -> list[str]:
    from .baselines import BASELINES

    return list(BASELINES[task])


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="vaekit", description="Variational autoencoders for real image work.")
    ap.add_argument("--version", action="version", version=f"vaekit {__import__('vaekit').__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("models", help="list shipped and local models with their headline metrics")
    p.add_argument("--models-dir", default=None, help="folder of local models (default ~/.cache/vaekit/models)")
    p.add_argument("--archs", action="store_true", help="list the registered architectures instead")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--install",
        default=None,
        metavar="NAME=FILE",
        help="install downloaded weights (e.g. codec-hyperprior-r1=codec-hyperprior-r1.safetensors)",
    )
    p.add_argument("--debug", action="store_true")

    p = sub.add_parser("train", help="train a model from a YAML config (resumable; torchrun for DDP)")
    p.add_argument(
        "config",
        nargs="?",
        help="YAML training recipe (see configs/), or a shipped model's name: fine-tune it on --data-dir with the "
        "recipe its card records",
    )
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. epochs=5 model_args.latent_dims=[32,16]")
    p.add_argument("-o", "--output", default=None, help="run folder for checkpoints, weights and logs")
    p.add_argument("--data-dir", default=None, help="folder of the data set")
    p.add_argument(
        "--resume", metavar="RUN", default=None, help="continue the run in this folder exactly where it stopped"
    )
    _common(p, seed=False)
    p.add_argument("--seed", type=int, default=None, help="override the config's seed")

    p = sub.add_parser("eval", help="ELBO, IWAE NLL (nats, bits/dim), reconstruction PSNR/SSIM on a test set")
    p.add_argument("model", help="shipped name, run folder or local model name")
    p.add_argument("--data-dir", required=True, help="folder of the data set (e.g. ../shared/data/mnist)")
    p.add_argument("--split", default="test", choices=("test", "train"))
    p.add_argument("-k", "--k", type=int, default=1000, help="importance samples for the IWAE bound (0: skip)")
    p.add_argument("--limit", type=_count, default=None, help="evaluate the first N images only")
    p.add_argument("--batch-size", type=_count, default=100)
    p.add_argument("--models-dir", default=None)
    p.add_argument("-o", "--output", default=None, help="also write the figures as JSON here")
    _common(p)

    p = sub.add_parser("generate", help="prior samples as a grid, or a latent interpolation between two images")
    p.add_argument("model", help="shipped name, run folder or local model name")
    p.add_argument("-n", type=int, default=64, help="number of samples")
    p.add_argument("--temperature", type=float, default=1.0, help="scale of the prior's standard deviation")
    p.add_argument("--interpolate", nargs=2, metavar=("A", "B"), help="two images to interpolate between")
    p.add_argument("--steps", type=int, default=10, help="frames of the interpolation, both ends included")
    p.add_argument("--nrow", type=int, default=None, help="images per grid row")
    p.add_argument("--label", type=int, default=None, help="class to draw (class-conditional models; default: each)")
    p.add_argument("-o", "--output", default="samples.png", help="image to write (PNG, TIFF, WebP, JPEG, BMP)")
    p.add_argument("--models-dir", default=None)
    p.add_argument("--max-pixels", type=_count, default=None, help="refuse larger input images (default 100 MP)")
    _common(p)

    p = sub.add_parser("compress", help="compress an image (or a folder) to .vkc files with the learned codec")
    p.add_argument("input", help="image file or folder (recursive; names are mirrored)")
    p.add_argument("-o", "--output", required=True, help=".vkc file, or folder for a folder input")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quality", type=int, default=None, help="1 (smallest) .. 8 (best); default 4")
    g.add_argument("--target-bpp", type=float, default=None, help="largest quality whose file fits this bits/pixel")
    g.add_argument(
        "--target-psnr", type=float, default=None, help="smallest quality whose decoded image reaches this PSNR (dB)"
    )
    p.add_argument(
        "--effort",
        type=int,
        default=0,
        help="0 (fast, default) .. 3: search each image's latents for a smaller file at the same quality; "
        "the decoder is the same (docs/models/codec-hyperprior.md gives seconds and gains)",
    )
    p.add_argument(
        "--model", default=None, help="codec: shipped name, run folder or weights (default codec-hyperprior)"
    )
    p.add_argument("--tile", type=int, default=1024, help="tile size in pixels, a multiple of 64 (bounds memory)")
    p.add_argument("--max-pixels", type=_count, default=None, help="refuse larger images (default 100 MP)")
    _folder(p)
    _common(p, seed=False)

    p = sub.add_parser("decompress", help="decode .vkc files (or a folder of them) to images")
    p.add_argument("input", help=".vkc file or folder")
    p.add_argument("-o", "--output", help=OUT_IMAGE)
    p.add_argument("--info", action="store_true", help="print what each file holds (its header), decode nothing")
    p.add_argument("--model", default=None, help="only for files written by a local (unshipped) codec")
    p.add_argument("--max-pixels", type=_count, default=None, help="refuse larger images (default 100 MP)")
    _folder(p)
    _common(p, seed=False)

    p = sub.add_parser("augment", help="new variants of images by moving through a VAE's latent space")
    p.add_argument("input", help="image or folder (recursive; with --keep-label: one subfolder per class)")
    p.add_argument("-o", "--output", required=True, help="folder for the variants and manifest.jsonl")
    p.add_argument("-n", type=int, default=10, help="variants per image")
    p.add_argument(
        "--strength",
        type=float,
        default=None,
        help="0..3; variants: latent noise in posterior std units (default 0.5); tangent: prior std "
        "per decoder direction (default 3)",
    )
    p.add_argument("--model", default="mnist-vae", help="a generative VAE (shipped name, run folder)")
    p.add_argument("--keep-label", action="store_true", help="class-conditional model: decode with the class")
    p.add_argument("--classical", action="store_true", help="also a seeded random affine on every variant")
    p.add_argument(
        "--method",
        choices=("variants", "tangent", "neighbours"),
        default="variants",
        help="variants: posterior noise x strength; tangent: moves along the decoder's strongest latent "
        "directions; neighbours: the nearest prior samples in latent space (with --keep-label, "
        "tangent and neighbours keep the folder's class with an unconditional VAE)",
    )
    p.add_argument("--pool", type=int, default=50000, help="prior samples searched by --method neighbours")
    _folder(p)
    _common(p)

    p = sub.add_parser("enhance", help="classical enhancement operations, composable (contrast, sharpen, ...)")
    p.add_argument("input", help="image file or folder (recursive)")
    p.add_argument("-o", "--output", required=True, help=OUT_IMAGE)
    p.add_argument(
        "--ops",
        required=True,
        help="comma list, applied in order, each with an optional strength: contrast=1.3 (factor), sharpen=0.8 "
        "(amount), denoise=3, erode=2, dilate=2 (sizes, px), saturation=1.3, rotate=10 (degrees), translate=2 "
        "(px), scale=1.1",
    )
    _folder(p)
    _common(p, device=False, seed=False)

    p = sub.add_parser(
        "compensate",
        help="correct exposure, contrast and colour cast (learned or classical); good photos are left alone",
    )
    p.add_argument("input", help="image file or folder (recursive)")
    p.add_argument("-o", "--output", required=True, help=OUT_IMAGE)
    p.add_argument("--method", default="vae", help="vae, or a classical one: " + ", ".join(_classical("compensate")))
    p.add_argument("--model", default="compensate-posterior", help="the exposure posterior for --method vae")
    _folder(p)
    _common(p)

    p = sub.add_parser("denoise", help="remove Gaussian, Poisson or salt-and-pepper noise (VAE or classical)")
    p.add_argument("input", help="image file or folder (recursive)")
    p.add_argument("-o", "--output", required=True, help=OUT_IMAGE + "; with --samples N > 1: a folder of draws")
    p.add_argument("--sigma", type=float, default=None, help="Gaussian level on the 0-255 scale (default: estimated)")
    p.add_argument(
        "--sigma-map", default=None, help="per-pixel levels (0-255) of the input's size: .npy, or a gray image (VAE)"
    )
    p.add_argument("--noise", default="gaussian", choices=("gaussian", "poisson", "salt-pepper"))
    p.add_argument("--peak", type=float, default=None, help="Poisson: expected photons at white")
    p.add_argument("--amount", type=float, default=None, help="salt-pepper: fraction of hit pixels (informative)")
    p.add_argument("--method", default="vae", help="vae, or a classical one: " + ", ".join(_classical("denoise")))
    p.add_argument(
        "--model",
        default=None,
        help="default: denoise-gray for gray images, denoise-color for colour (denoise-gray runs on colour in opponent "
        "channels); or a run folder",
    )
    p.add_argument(
        "--samples", type=int, default=1, help="N > 1: N posterior draws, mean.png, sample_*.png, std.png (1: one pass)"
    )
    p.add_argument(
        "--ensemble",
        type=int,
        default=None,
        help="VAE: average 1, 2, 4 or 8 passes over flipped and turned copies (default: the model's; denoise-gray 2)",
    )
    p.add_argument(
        "--strength",
        type=_strength,
        default=1.0,
        help="0..1: how much of the noise found is taken out (default 1: all; 0.7 leaves a little grain); "
        "LUMA,COLOUR sets the two apart (0.6,1: some grain, no colour blotches)",
    )
    p.add_argument(
        "--tile",
        type=_at_least(64),
        default=None,
        help="tile side for large images (overlapping, blended; default 768)",
    )
    p.add_argument("--max-pixels", type=_count, default=None, help="refuse larger images (default 100 MP)")
    _folder(p)
    _common(p)

    p = sub.add_parser("inpaint", help="fill holes, scratches and missing pixels (VAE fills, or classical)")
    p.add_argument("input", help="image file or folder (recursive)")
    p.add_argument("-o", "--output", required=True, help=OUT_IMAGE + "; with --samples N > 1: a folder of fills")
    p.add_argument(
        "--mask", default=None, help="mask image of the same size: pixels > 127 (any mode; a 0/1 mask: 1) are missing"
    )
    p.add_argument("--mask-dir", default=None, help="folder input: masks matched by relative file name")
    p.add_argument("--box", default=None, help="x0,y0,x1,y1 (pixels, end exclusive): the box is missing")
    p.add_argument(
        "--detect",
        default=None,
        choices=("scratches", "transparent"),
        help="find the holes: thin bright/dark lines, or the file's transparent pixels (alpha < 128)",
    )
    p.add_argument("--save-mask", default=None, help="write the mask used (a file; a folder for folder input)")
    p.add_argument("--samples", type=int, default=1, help="N > 1: N posterior fills, mean.png, sample_*.png, std.png")
    p.add_argument("--method", default="vae", help="vae, or a classical one: " + ", ".join(_classical("inpaint")))
    p.add_argument(
        "--model",
        default=None,
        help="inpaint-color (default), an inpaint-vae run folder, or a "
        "generative VAE of the image's domain (e.g. mnist-vae)",
    )
    p.add_argument("--iters", type=int, default=100, help="pseudo-Gibbs iterations (generative VAEs)")
    p.add_argument("--tile", type=_at_least(64), default=512, help="tile side for large images (overlapping, blended)")
    p.add_argument(
        "--ensemble",
        type=int,
        default=1,
        help="VAE: average 2, 4 or 8 passes over flipped and turned copies (a little better, that many times slower)",
    )
    p.add_argument("--max-pixels", type=_count, default=None, help="refuse larger images (default 100 MP)")
    _folder(p)
    _common(p)

    p = sub.add_parser("denoise-fit", help="self-supervised: fit a denoiser on noisy images only (R2R or DivNoising)")
    p.add_argument("input", help="folder of noisy images (at least 2; one in ten held out for validation)")
    p.add_argument("-o", "--output", required=True, help="run folder (resumed if it holds a checkpoint)")
    p.add_argument("--sigma", type=float, default=None, help="Gaussian level, 0-255 scale (default: estimated)")
    p.add_argument("--noise", default="gaussian", choices=("gaussian", "poisson"))
    p.add_argument("--peak", type=float, default=None, help="Poisson: expected photons at white")
    p.add_argument("--steps", type=_count, default=None, help="training steps (default: the frozen setting)")
    p.add_argument(
        "--method",
        default=None,
        choices=("r2r", "divnoising"),
        help="r2r: the conditional VAE on recorrupted pairs (Gaussian; the default for it); divnoising: "
        "a VAE with the noise model as its likelihood (Gaussian or Poisson; the default for Poisson)",
    )
    _common(p, device=False)

    p = sub.add_parser("bench", help="benchmarks that write results/<task>-<set>.{json,md,png}")
    bsub = p.add_subparsers(dest="task", metavar="TASK", parser_class=_Parser)
    b = bsub.add_parser("generate", help="likelihood benchmark of a generative VAE on binarized MNIST")
    b.add_argument("--data-dir", required=True, help="the MNIST folder")
    b.add_argument("--model", default="mnist-vae")
    b.add_argument("-k", "--k", type=int, default=1000, help="importance samples for the IWAE bound")
    b.add_argument("--limit", type=_count, default=None, help="first N test images only (default: all 10,000)")
    b.add_argument("--throughput-steps", type=int, default=300, help="steps per timed training run (0: skip)")
    b.add_argument("-o", "--output", default="results", help="results folder")
    b.add_argument("--models-dir", default=None)
    _common(b)

    b = bsub.add_parser("compress", help="rate-distortion of the codec vs JPEG, WebP, AVIF, JPEG XL on real files")
    b.add_argument(
        "--data-dir", required=True, help="folder of test images (../shared/data/kodak), or photos (photos-val, ÷2)"
    )
    b.add_argument("--model", default="codec-hyperprior")
    b.add_argument("--limit", type=_count, default=None, help="first N images only")
    b.add_argument("--codecs", default="jpeg,webp,avif,jxl", help="classical codecs to sweep (comma list)")
    b.add_argument("--efforts", default="0", help="encode efforts to measure (comma list; 0 always runs)")
    b.add_argument("--qualities", default=None, help="codec qualities to measure (comma list; default all)")
    b.add_argument("--anchors", default=None, help="folder of anchor curves (default ../shared/anchors)")
    b.add_argument("--cache", default=None, help="cache of classical codec results (default results/.cache)")
    b.add_argument("-o", "--output", default="results", help="results folder")
    _common(b, device=False, seed=False)

    b = bsub.add_parser("augment", help="few-label MNIST classifier with no / classical / VAE / both augmentation")
    b.add_argument("--data-dir", required=True, help="the MNIST folder")
    b.add_argument("--model", default="mnist-vae", help="the generative VAE (trained without labels)")
    b.add_argument("--seeds", type=int, default=5, help="labelled subsets (seeds 0..N-1)")
    b.add_argument("--per-class", type=int, default=10)
    b.add_argument("--steps", type=int, default=300, help="classifier steps (batch 100)")
    b.add_argument("--variants", type=int, default=10, help="VAE variants per labelled image")
    b.add_argument("--strength", type=float, default=0.5)
    b.add_argument(
        "--tangent-strength",
        type=float,
        default=None,
        help="tangent arms: prior std per decoder direction (default: the val-chosen 3)",
    )
    b.add_argument("--tangent-k", type=int, default=None, help="tangent arms: decoder directions mixed (default 10)")
    b.add_argument("--tangent-variants", type=int, default=None, help="tangent arms: moves per image (default 40)")
    b.add_argument("--generated", type=int, default=20000, help="VAE prior samples offered to the gen arms")
    b.add_argument("--neighbours", type=int, default=10, help="nbr arm: nearest prior samples per labelled image")
    b.add_argument("--pool", type=int, default=50000, help="nbr arm: prior samples searched")
    b.add_argument("--split", choices=("test", "val"), default="test", help="val: last 10,000 training images")
    b.add_argument("--limit", type=_count, default=None, help="evaluate on the first N images only")
    b.add_argument("-o", "--output", default="results")
    _common(b, device=False, seed=False)

    b = bsub.add_parser("serve", help="load test of vaekit serve on loopback -> results/serve-load.{json,md}")
    b.add_argument("--clients", type=int, default=8, help="concurrent clients")
    b.add_argument("--seconds", type=float, default=20.0, help="how long they post requests")
    b.add_argument("--size", type=int, default=128, help="side of the square test image")
    b.add_argument("--queue", type=int, default=4, help="the server's queue (more waiting requests get 503)")
    b.add_argument("-o", "--output", default="results")
    _common(b, seed=False)

    b = bsub.add_parser("throughput", help="images/s and MP/s of the folder commands, 1 process and torchrun")
    b.add_argument("--data-dir", required=True, help="folder of test images (e.g. ../shared/data/kodak)")
    b.add_argument("--tasks", default="compress,decompress,denoise,inpaint,compensate", help="comma list")
    b.add_argument("--processes", default="1,2", help="comma list of process counts (1 is the reference)")
    b.add_argument("--limit", type=_count, default=None, help="first N images only")
    b.add_argument("-o", "--output", default="results")
    _common(b, seed=False)

    b = bsub.add_parser("compensate", help="exposure/contrast/colour-cast correction on seeded degradations")
    b.add_argument("--data-root", required=True, help="folder holding the sets (e.g. ../shared/data)")
    b.add_argument("--sets", default="kodak,photos-val", help="comma list: set folders, or photos-val")
    b.add_argument("--methods", default=None, help="comma list (default: none, percentile, gray-world, clahe, vae)")
    b.add_argument("--model", default="compensate-posterior")
    b.add_argument("--limit", type=_count, default=None)
    b.add_argument("-o", "--output", default="results")
    _common(b, device=False)

    b = bsub.add_parser("denoise", help="VAE and classical denoisers on gray, colour and real-noise sets")
    b.add_argument("--data-root", required=True, help="folder holding the sets (e.g. ../shared/data)")
    b.add_argument(
        "--sets",
        default="bsd68",
        help="comma list: set12, bsd68 (gray), cbsd68, kodak, mcmaster, photos-val (colour), photos-val-gray (its "
        "luma, for choosing gray models), realnoise-cc15 (real camera noise, all blind); or a folder of your own "
        "clean images under --data-root (gray where all its images are)",
    )
    b.add_argument("--sigmas", default="15,25,50", help="Gaussian levels, 0-255 scale")
    b.add_argument("--noises", default="", help="extra conditions: poisson30, sp0.1, camera (camera files, all blind)")
    b.add_argument(
        "--methods",
        default=None,
        help="comma list (default: vae, vae-8, vae-blind and every "
        "classical method installed; vae-selfsup and vae-divnoising fit a self-supervised denoiser per set "
        "and noise, from the noisy images only: r2r for Gaussian noise (DivNoising for Poisson), and "
        "DivNoising)",
    )
    b.add_argument("--model-gray", default=None, help="gray VAE denoiser (default: denoise-gray)")
    b.add_argument("--model-color", default=None, help="VAE denoiser for colour sets (default: denoise-color)")
    b.add_argument("--limit", type=_count, default=None, help="first N images of each set")
    b.add_argument("--threads", type=int, default=1, help="threads for every method (default 1)")
    b.add_argument("--fresh", action="store_true", help="rerun cached classical methods (timings from this run)")
    b.add_argument(
        "--fresh-file",
        action="store_true",
        help="replace results/denoise-<set>.json instead of merging this run into it",
    )
    b.add_argument("-o", "--output", default="results")
    b.add_argument("--debug", action="store_true", help="show tracebacks")
    b.add_argument("--quiet", action="store_true")

    b = bsub.add_parser("inpaint", help="VAE and classical inpainting on CBSD68/Kodak, hole PSNR/SSIM")
    b.add_argument("--data-root", required=True, help="folder holding the sets (e.g. ../shared/data)")
    b.add_argument(
        "--sets",
        default="cbsd68",
        help="comma list: cbsd68, kodak (colour); bsd68 (gray: the anchors); "
        "mnist (first 500 test digits, latent inpainting)",
    )
    b.add_argument(
        "--masks",
        default="box,pixels0.5,pixels0.8,strokes-thin,strokes-medium,strokes-thick",
        help="comma list of mask kinds (box, pixelsRATE, strokes-thin|medium|thick, text)",
    )
    b.add_argument(
        "--methods",
        default=None,
        help="comma list (default: vae, vae-x4, vae-8, telea, ns, biharmonic, harmonic, mean; also vae-x2, vae-x8)",
    )
    b.add_argument(
        "--model", default=None, help="inpainter for vae / vae-xN / vae-8 (default: inpaint-color; mnist: mnist-vae)"
    )
    b.add_argument(
        "--samples-limit", type=int, default=None, help="run vae-8 (8 fills per image) on the first N images only"
    )
    b.add_argument("--limit", type=_count, default=None, help="first N images of each set")
    b.add_argument("--threads", type=int, default=1, help="threads for every method (default 1)")
    b.add_argument("--fresh", action="store_true", help="recompute cached results (timings from this run)")
    b.add_argument("-o", "--output", default="results")
    b.add_argument("--debug", action="store_true", help="show tracebacks")
    b.add_argument("--quiet", action="store_true")

    p = sub.add_parser("demo", help="the main job on shipped weights: samples, reconstructions, an HTML page")
    p.add_argument("-o", "--output", default="demo", help="folder for the pictures and index.html")
    _common(p)

    p = sub.add_parser("serve", help="a local web page and HTTP API: restore, repair, compress and compare")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-upload-mb", type=float, default=50, help="larger uploads get 413 (default 50)")
    p.add_argument("--max-pixels", type=_count, default=None, help="larger images get 413 (default 100 MP)")
    p.add_argument("--queue", type=int, default=4, help="requests that may wait for the model; more get 503")
    _common(p, seed=False)

    p = sub.add_parser("manifest", help="sum up a folder run from its manifest: done, failed, time")
    p.add_argument("folder", help="the output folder of a folder command")
    return ap


def _set_threads(args):
    """``--threads``; by default the cores are divided among the processes torchrun starts on this node."""
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if getattr(args, "threads", None) is not None:
        if args.threads < 1:
            raise VaekitError("--threads must be at least 1")
        if args.threads > cores:  # more threads than cores only fight over them (ten times slower at 1000)
            warnings.warn(f"--threads {args.threads}: this process may use {cores} cores; using {cores}", stacklevel=2)
        torch.set_num_threads(min(args.threads, cores))
    elif int(os.environ.get("LOCAL_WORLD_SIZE", 1)) > 1:
        torch.set_num_threads(max(1, cores // int(os.environ["LOCAL_WORLD_SIZE"])))


def _device(args):
    """The device asked for; under torchrun each process takes its own GPU (LOCAL_RANK)."""
    from .training.loop import resolve_device

    dev = resolve_device(getattr(args, "device", "cpu") or "cpu")
    if dev.type == "cuda" and dev.index is None and "LOCAL_RANK" in os.environ:
        import torch

        return torch.device("cuda", int(os.environ["LOCAL_RANK"]) % torch.cuda.device_count())
    return dev


# what `vaekit models` shows of a card's numbers: test figures and margins over the classical tools; the training's
# own validation figure only where a card has nothing else
HEADLINE = ("test_nll_iwae", "test_elbo", "test_bits_per_dim", "active_units")
HEADLINE_SUFFIXES = ("_minus_bm3d_db", "_minus_best_classical_db", "_bd_rate_vs_webp_pct", "_bd_rate_vs_jpeg_pct")


def cmd_models(args):
    from .pretrained import available_models
    from .registry import list_models

    if args.install:
        from .pretrained import install_weights

        name, sep, path = args.install.partition("=")
        if not sep:
            raise VaekitError("--install takes NAME=FILE, e.g. codec-hyperprior-r1=codec-hyperprior-r1.safetensors")
        print(f"installed {name}: {install_weights(name, path)}")
        return
    if args.archs:
        for name, doc in list_models().items():
            print(f"{name:10s} {doc}")
        return
    rows = available_models(args.models_dir)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    for r in rows:
        card = r["card"]
        m = {k: v for k, v in card.get("metrics", {}).items() if isinstance(v, (int, float))}
        shown = [k for k in m if k in HEADLINE or k.endswith(HEADLINE_SUFFIXES)] or [k for k in m if k == "val_elbo"]
        head = ", ".join(f"{k} {m[k]}" for k in shown)
        print(
            f"{r['name']:16s} {card['arch']:8s} {card.get('parameters', 0) / 1e6:.2f}M params  [{r['source']}]  {head}"
        )
    if not rows:
        print("no models found")


def cmd_train(args):
    from .training.config import TrainConfig
    from .training.loop import train

    overrides = list(args.overrides)
    if args.config and "=" in args.config and not Path(args.config).exists():
        overrides.insert(0, args.config)  # `train --resume RUN key=value`: no config file given
        args.config = None
    if args.data_dir:
        overrides.append(f"data_dir={args.data_dir}")
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    if args.threads:
        overrides.append(f"threads={args.threads}")
    if args.device != "auto":
        overrides.append(f"device={args.device}")
    resume_overrides: list[str] = []
    if args.resume:
        if args.output and Path(args.output) != Path(args.resume):
            raise VaekitError("--resume continues in its own folder; drop -o or give the same folder")
        cfg = TrainConfig.load(args.config, overrides) if args.config else None
        resume_overrides = [] if args.config else overrides
        out = args.resume
    else:
        if not args.config:
            raise VaekitError("train needs a config file (see configs/), a shipped model's name, or --resume RUN")
        if not args.output:
            raise VaekitError("train needs -o/--output, the run folder")
        cfg = TrainConfig.load(args.config, overrides)
        if cfg.init_from == args.config and not Path(args.config).exists() and not args.quiet:
            length = f"{cfg.max_steps} step(s)" if cfg.max_steps else f"{cfg.epochs} epoch(s)"
            print(
                f"fine-tuning {args.config} from its shipped weights with the recipe its card records: {cfg.model}, "
                f"{length} of batch {cfg.batch_size}, lr {cfg.lr:g}, training "
                f"{', '.join(cfg.trainable) or 'every tensor'} (key=value changes any of it)"
            )
        out = args.output
        if (Path(out) / "checkpoint.pt").exists():
            raise VaekitError(f"{out} already holds a run; use --resume {out} or another -o")
    command = "vaekit " + " ".join(shlex.quote(a) for a in args.argv)
    train(cfg, out, resume=bool(args.resume), quiet=args.quiet, command=command, overrides=resume_overrides)


def _load_model(args):
    from .pretrained import load_model

    return load_model(args.model, getattr(args, "models_dir", None)).to(_device(args))


def cmd_eval(args):
    from .tasks.generate import evaluate

    model = _load_model(args)
    from .data import load_eval_images

    x, y = load_eval_images(model, args.data_dir, args.split, args.limit, args.seed)
    bar = _bar(len(x), "images", args.quiet)
    res = evaluate(
        model,
        x.to(_device(args)),
        labels=y,
        k=args.k,
        batch_size=args.batch_size,
        seed=args.seed,
        progress=(lambda i, n: bar.update(i - bar.n)) if bar else None,
    )
    if bar is not None:
        bar.close()
    res.pop("nll_per_example", None)
    order = ["n", "k", "elbo", "nll", "bits_per_dim", "kl", "rec", "active_units", "latent_dims", "psnr", "ssim"]
    for key in order + [k for k in res if k not in order]:
        if key in res:
            v = res[key]
            print(f"{key:18s} {v:.4f}" if isinstance(v, float) else f"{key:18s} {v}")
    if args.output:
        from .io import atomic_write_text

        atomic_write_text(Path(args.output), json.dumps(res, indent=2) + "\n")


def _bar(total, unit, quiet):
    if quiet:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, file=sys.stderr, dynamic_ncols=True)


def cmd_generate(args):
    from .io import check_output_name, grid, read_image, write_image
    from .tasks.generate import generate, interpolate

    model = _load_model(args)
    check_output_name(args.output)
    if args.nrow is not None and args.nrow < 1:
        raise VaekitError(f"--nrow must be at least 1, got {args.nrow}")
    if args.interpolate:
        a, b = (read_image(p, max_pixels=args.max_pixels) for p in args.interpolate)
        frames = interpolate(model, a.to(_device(args)), b.to(_device(args)), steps=args.steps, label=args.label)
        write_image(args.output, grid(frames.cpu(), nrow=args.nrow or args.steps))
        print(f"wrote {args.steps} interpolation frames to {args.output}")
        return
    imgs = generate(model, args.n, temperature=args.temperature, seed=args.seed, label=args.label)
    by_class = getattr(model, "conditional", False) and args.label is None  # a row per class turn
    write_image(args.output, grid(imgs.cpu(), nrow=args.nrow or (model.num_classes if by_class else None)))
    print(f"wrote {args.n} samples (temperature {args.temperature}, seed {args.seed}) to {args.output}")


def _max_pixels(args):
    import os

    if getattr(args, "max_pixels", None):
        os.environ["VAEKIT_MAX_PIXELS"] = str(args.max_pixels)


def _batch(args) -> dict:
    """The folder options every *_paths function takes."""
    return {"shard": args.shard, "overwrite": args.overwrite, "progress": not args.quiet}


def _finish(args, summary, verb: str, line=None) -> int:
    """Print a folder run's summary (a single input: ``line(row)``); exit FAILED_EXIT if inputs failed."""
    from .batch import FAILED_EXIT

    if not Path(args.input).is_dir():
        for r in summary.rows:
            print(line(r))
        return 0
    for r in summary.failed:
        print(f"vaekit: failed: {r['input']}: {r['error']}", file=sys.stderr)
    done = len(summary.rows)
    if summary.merged is not None:  # torchrun's rank 0, after every shard finished
        m = summary.merged
        print(
            f"{verb} {summary.total} inputs into {args.output} with {os.environ.get('WORLD_SIZE')} processes in "
            f"{summary.seconds:.1f} s: {m['done']} done, {m['failed']} failed"
        )
        return FAILED_EXIT if m["failed"] else 0
    if args.shard is not None or "RANK" not in os.environ:
        print(
            f"{verb} {done} of {summary.total} inputs into {args.output} in {summary.seconds:.1f} s"
            + (f", {summary.skipped} already done" if summary.skipped else "")
            + (f", {summary.changed} redone with the new settings" if summary.changed else "")
            + (f", {summary.updated} redone as their files changed" if summary.updated else "")
            + (f", {len(summary.failed)} failed (listed in {args.output}/manifest.jsonl)" if summary.failed else "")
            + (f" (shard {args.shard})" if args.shard is not None else "")
        )
    return FAILED_EXIT if summary.failed else 0


def cmd_compress(args):
    from .tasks.compress import compress_paths

    _max_pixels(args)
    targeted = args.target_bpp is not None or args.target_psnr is not None
    quality = 4 if args.quality is None and not targeted else args.quality
    summary = compress_paths(
        args.input,
        args.output,
        quality=quality,
        target_bpp=args.target_bpp,
        target_psnr=args.target_psnr,
        effort=args.effort,
        model=args.model,
        tile=args.tile,
        device=_device(args),
        **_batch(args),
    )
    asked = f"{args.target_bpp} bpp" if args.target_bpp is not None else f"{args.target_psnr} dB"
    missed = [r for r in summary.rows if r.get("target_met") is False]
    if missed:
        end = "quality 1" if args.target_bpp is not None else f"the top quality {missed[0]['qualities']}"
        print(
            f"vaekit: note: {len(missed)} image(s) do not meet {asked} even at {end}; written at {end}", file=sys.stderr
        )
    top = [r for r in summary.rows if r.get("target_met") and r["quality"] == r["qualities"]]
    top = top if args.target_bpp is not None else []  # a PSNR target met at the top quality is simply met
    if top:  # the target did not bind: the user may expect a file near it
        most = max(r["bpp"] for r in top)
        print(
            f"vaekit: note: {len(top)} image(s) take at most {most:.3g} bpp at the top quality {top[0]['quality']}, "
            f"under the {args.target_bpp} bpp asked",
            file=sys.stderr,
        )
    return _finish(
        args,
        summary,
        "compressed",
        lambda r: (
            f"{r['output']}: quality {r['quality']}, {r['bytes']} bytes, {r['bpp']:.4f} bpp"
            + (f", {r['psnr']:.2f} dB" if r.get("psnr") is not None else "")
        ),
    )


def cmd_decompress(args):
    from .tasks.compress import decompress_paths

    _max_pixels(args)
    if args.info:
        if args.output:
            raise VaekitError("decompress --info reads the headers and writes nothing: drop -o, or --info to decode")
        return _vkc_info(args.input)
    if not args.output:
        raise VaekitError("decompress: -o/--output is required (or --info to read the headers only)")
    summary = decompress_paths(args.input, args.output, model=args.model, device=_device(args), **_batch(args))
    return _finish(args, summary, "decoded", lambda r: f"{r['output']}: {r['shape'][1]}x{r['shape'][0]}")


def _vkc_info(src) -> int:
    """One line per file; in a folder a file that is not a sound ``.vkc`` gets an error line and exit code 3."""
    from .batch import FAILED_EXIT
    from .tasks.compress import describe, vkc_files

    failed = 0
    for path in vkc_files(src):
        try:
            d = describe(Path(path).read_bytes())
        except VaekitError as e:
            if not Path(src).is_dir():
                raise VaekitError(f"{path}: {e}") from None
            print(f"vaekit: error: {path}: {e}", file=sys.stderr)
            failed += 1
            continue
        extras = (f", colour profile {d['profile']!r}" if d["profile"] else "") + (
            f", alpha plane ({d['alpha_bytes']} bytes)" if d["alpha_bytes"] else ""
        )
        kind = "gray" if d["channels"] == 1 else "RGB"
        print(
            f"{path}: .vkc version {d['version']}, {d['width']}x{d['height']} {kind}, quality {d['quality']} of "
            f"{d['model'] or 'a local model (decode with --model)'} (weights {d['weights_id']}), "
            f"{d['tiles']} tile(s) of {d['tile']} px, {d['bytes']} bytes, {d['bpp']:.4f} bpp{extras}"
        )
    return FAILED_EXIT if failed else 0


def cmd_augment(args):
    from .tasks.augment import augment_paths

    summary = augment_paths(
        args.input,
        args.output,
        n=args.n,
        strength=args.strength,
        model=args.model,
        seed=args.seed,
        keep_label=args.keep_label,
        classical=args.classical,
        method=args.method,
        pool=args.pool,
        **_batch(args),
    )
    if not Path(args.input).is_dir():
        print(f"wrote {args.n} variants and manifest.jsonl into {args.output}")
        return 0
    return _finish(args, summary, "augmented")


def cmd_enhance(args):
    from .enhance import enhance_paths

    summary = enhance_paths(args.input, args.output, args.ops, **_batch(args))
    return _finish(args, summary, "enhanced", lambda r: f"{r['output']}: {', '.join(r['ops'])}")


def cmd_compensate(args):
    from .tasks.compensate import compensate_paths

    summary = compensate_paths(
        args.input,
        args.output,
        method=args.method,
        model=args.model,
        seed=args.seed,
        device=_device(args),
        **_batch(args),
    )

    def line(r):
        if r["method"] != "vae":
            return f"{r['output']} ({r['method']})"
        odds = f"P(needs a change) {r['p_change']:.2f}"
        if not r["changed"]:
            return f"{r['output']} (vae): left unchanged, {odds}"
        cast = ", cast " + "/".join(f"{c:.3f}" for c in r["cast"]) if "cast" in r else ""
        return f"{r['output']} (vae): gain {r['gain']:.3f}, gamma {r['gamma']:.3f}{cast}, {odds}"

    return _finish(args, summary, "compensated", line)


def cmd_denoise(args):
    from .tasks.denoise import PATHS, denoise_paths, read_level_map

    sigma = args.sigma
    if args.sigma_map is not None:
        if sigma is not None:
            raise VaekitError("give --sigma or --sigma-map, not both")
        sigma = read_level_map(args.sigma_map)
    summary = denoise_paths(
        args.input,
        args.output,
        sigma=sigma,
        noise=args.noise,
        peak=args.peak,
        amount=args.amount,
        method=args.method,
        model=args.model,
        samples=args.samples,
        ensemble=args.ensemble,
        strength=args.strength,
        seed=args.seed,
        tile=args.tile,
        max_pixels=args.max_pixels,
        device=_device(args),
        **_batch(args),
    )

    def line(r):
        level = (
            ""
            if r["sigma"] is None
            else (f", sigma {r['sigma']:.2f}" + (" (estimated)" if r["sigma_estimated"] else ""))
        )
        if r.get("path") in ("shuffled", "camera"):
            level += f"; {PATHS[r['path']]}"
        return f"{r['output']}: {args.method}{level}, {r['seconds']:.2f} s"

    return _finish(args, summary, "denoised", line)


def cmd_inpaint(args):
    from .tasks.inpaint import inpaint_paths

    summary = inpaint_paths(
        args.input,
        args.output,
        mask=args.mask,
        mask_dir=args.mask_dir,
        box=args.box,
        detect=args.detect,
        save_mask=args.save_mask,
        samples=args.samples,
        method=args.method,
        model=args.model,
        seed=args.seed,
        tile=args.tile,
        iters=args.iters,
        max_pixels=args.max_pixels,
        ensemble=args.ensemble,
        device=_device(args),
        **_batch(args),
    )
    return _finish(
        args,
        summary,
        "inpainted",
        lambda r: f"{r['output']}: {r['method']}, {100 * r['hole_fraction']:.1f}% missing, {r['seconds']:.2f} s",
    )


def cmd_serve(args):
    from .serve import serve

    if not 0 < args.port < 65536:
        raise VaekitError(f"--port {args.port}: give 1..65535")
    if args.max_upload_mb <= 0 or args.queue < 0:
        raise VaekitError("--max-upload-mb must be positive and --queue at least 0")
    serve(
        args.host,
        args.port,
        max_upload_mb=args.max_upload_mb,
        max_pixels=args.max_pixels,
        queue=args.queue,
        device=_device(args),
    )


def cmd_manifest(args):
    from .batch import summarize

    s = summarize(args.folder)
    print(
        f"{args.folder}: {s['inputs']} inputs, {s['done']} done, {s['failed']} failed, "
        f"{s['bytes']} bytes written, {s['seconds']:.1f} s of work (shards {', '.join(s['shards'])})"
    )
    for f in s["failures"]:
        print(f"  failed: {f['input']}: {f['error']}")
    if len(s["settings"]) > 1:  # a folder made with more than one set of options (several job arrays, say)
        for v in s["settings"]:
            options = ", ".join(f"{k}={v['settings'][k]}" for k in sorted(v["settings"]))
            print(f"  {v['inputs']} done with {options}")
    return 0


def cmd_denoise_fit(args):
    import shlex

    from .tasks.selfsup import fit

    if args.peak is not None and args.noise != "poisson":
        raise VaekitError("--peak applies to poisson noise only: add --noise poisson")
    r = fit(
        args.input,
        args.output,
        sigma=args.sigma,
        noise=args.noise,
        peak=args.peak,
        steps=args.steps,
        threads=args.threads or 0,
        seed=args.seed,
        quiet=args.quiet,
        method=args.method,
        command="vaekit " + " ".join(shlex.quote(a) for a in args.argv),
    )
    model = (
        f"noise model: Gaussian sigma {r['sigma']:.2f}"
        if r["noise"] == "gaussian"
        else f"noise model: Poisson peak {r['peak']:g}"
    )
    print(
        f"fitted {args.output} ({model}; {r['steps']} steps, best validation ELBO {r['best_val_elbo']:.1f} "
        f"at step {r['best_step']}); use it with: vaekit denoise IMAGE --model {args.output} -o OUT"
    )


def cmd_bench(args):
    from .bench import BENCHES, defaults

    if not args.task:
        raise VaekitError(f"bench needs a task: {', '.join(BENCHES)}")
    known = defaults(args.task)
    return BENCHES[args.task](**{k: v for k, v in vars(args).items() if k in known})


def cmd_demo(args):
    from .demo import run_demo

    run_demo(args.output, seed=args.seed, device=_device(args))


COMMANDS = {
    "models": cmd_models,
    "train": cmd_train,
    "eval": cmd_eval,
    "generate": cmd_generate,
    "compress": cmd_compress,
    "decompress": cmd_decompress,
    "augment": cmd_augment,
    "enhance": cmd_enhance,
    "compensate": cmd_compensate,
    "denoise": cmd_denoise,
    "denoise-fit": cmd_denoise_fit,
    "inpaint": cmd_inpaint,
    "bench": cmd_bench,
    "demo": cmd_demo,
    "manifest": cmd_manifest,
    "serve": cmd_serve,
}


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    print(f"vaekit: warning: {message}", file=sys.stderr)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    try:
        args, extra = build_parser().parse_known_args(argv)
        if extra:
            if getattr(args, "command", None) == "train" and all("=" in e and not e.startswith("-") for e in extra):
                args.overrides = list(args.overrides) + extra
            else:
                raise VaekitError(f"unrecognized arguments: {' '.join(extra)}")
        if not args.command:
            build_parser().print_help()
            return 2
        args.argv = list(argv)  # the exact invocation, recorded in model cards and benchmark JSON
        with warnings.catch_warnings():  # a warning is one line too (--debug keeps Python's form)
            if not debug:
                warnings.showwarning = _one_line_warning
            _set_threads(args)
            if getattr(args, "output", None) and args.command not in ("bench", "models"):
                from .io import check_output_path

                check_output_path(args.output)
            rc = COMMANDS[args.command](args)
        return rc if isinstance(rc, int) else 0  # folder commands return FAILED_EXIT when inputs failed
    except VaekitError as e:
        if debug:
            raise
        print(f"vaekit: error: {e}", file=sys.stderr)
        return e.exit_code
    except BrokenPipeError:  # the reader stopped early (`vaekit models --json | head`): nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so that Python's flush at exit is quiet
        return 141
    except OSError as e:  # a write the checks could not foresee (a read-only place, a full disk)
        if debug:
            raise
        where = f" {e.filename}" if e.filename else ""
        print(f"vaekit: error: cannot write{where}: {e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vaekit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
