"""Feed damaged .vkc files to the decoder: every one must decode or be refused with a VaekitError -- never
another exception, a crash, a hang or a large allocation.

    python scripts/fuzz_vkc.py -n 10000                  # random damage (tests run a few hundred)
    python scripts/fuzz_vkc.py --coverage -n 100000      # coverage-guided (atheris / libFuzzer; CI runs 2,000)

Random damage, four kinds in turn: truncation; 1-4 random bytes changed; and the same with the CRC recomputed,
so the damage gets past the checksum into the header checks and the range decoder.  ``--coverage`` lets
libFuzzer mutate the golden file guided by the branches it reaches in vaekit's own code (instrumented by
atheris); the first input byte says whether the CRC is recomputed.  Each input is capped at 20 s and the
process at 2 GB of memory, so a hang or an allocation by an unchecked header field fails the run.
"""

import argparse
import random
import struct
import sys
import time
import zlib
from pathlib import Path

GOLDEN = Path(__file__).resolve().parents[1] / "tests" / "data" / "golden"


def fuzz(data: bytes, model, n: int, seed: int = 0) -> dict:
    from vaekit.errors import VaekitError
    from vaekit.tasks.compress import decompress

    rng = random.Random(seed)
    counts = {"refused": 0, "decoded": 0}
    for i in range(n):
        b = bytearray(data)
        if i % 4 == 0:
            b = b[: rng.randrange(len(b))]
        else:
            for _ in range(rng.randint(1, 4)):
                b[rng.randrange(len(b))] = rng.randrange(256)
            if i % 4 >= 2:
                b[-4:] = struct.pack("<I", zlib.crc32(bytes(b[:-4])))
        try:
            decompress(bytes(b), model=model)
            counts["decoded"] += 1
        except VaekitError:
            counts["refused"] += 1
    return counts


def with_extras(data: bytes, alpha: bool = False) -> bytes:
    """A file re-packed with a colour profile (version 2) and, with ``alpha``, an alpha plane (version 3) before
    its payloads, so that damage reaches those paths."""
    import numpy as np

    from vaekit.entropy import container

    header, payloads = container.unpack(data, 10**8)
    header.icc = bytes(range(256)) * 2
    if alpha:
        plane = np.zeros((header.height, header.width), np.uint8)
        plane[: header.height // 2] = 255
        header.alpha = container.alpha_png(plane)
    return container.pack(header, payloads)


def damage(b: bytes) -> bytes:
    """A coverage-guided input as a file: byte 0 odd means the CRC is recomputed over the rest."""
    body = bytearray(b[1:])
    if b and b[0] & 1 and len(body) >= 4:
        body[-4:] = struct.pack("<I", zlib.crc32(bytes(body[:-4])))
    return bytes(body)


def coverage_fuzz(runs: int, seed: int) -> None:
    """libFuzzer over the decoder, with vaekit's modules instrumented; exits the process when done."""
    import tempfile

    import atheris

    with atheris.instrument_imports(include=["vaekit"]):  # the package loads lazily: name what the decoder runs
        import vaekit.entropy.coder
        import vaekit.entropy.container
        import vaekit.entropy.models
        import vaekit.models.codec  # noqa: F401
        from vaekit.errors import VaekitError
        from vaekit.pretrained import load_from_files
        from vaekit.tasks.compress import decompress

    model = load_from_files(GOLDEN / "tiny-codec.safetensors", GOLDEN / "tiny-codec.json")
    counts = {"refused": 0, "decoded": 0}
    t = time.perf_counter()

    def one(b: bytes):
        try:
            decompress(damage(b), model=model)
            counts["decoded"] += 1
        except VaekitError:
            counts["refused"] += 1
        n = counts["refused"] + counts["decoded"]
        if n % max(1, runs // 10) == 0:  # libFuzzer ends the process itself: report as it goes
            print(
                f"coverage-guided: {n} inputs, {counts['refused']} refused cleanly, {counts['decoded']} decoded, "
                f"none crashed; {time.perf_counter() - t:.1f} s",
                flush=True,
            )

    corpus = Path(tempfile.mkdtemp(prefix="vkc-corpus-"))
    golden = (GOLDEN / "golden.vkc").read_bytes()
    v3 = (GOLDEN / "golden-v3.vkc").read_bytes()  # committed: a profile and an alpha plane
    seeds = {"plain": golden, "profile": with_extras(golden), "alpha": with_extras(golden, alpha=True), "v3": v3}
    for name, b in seeds.items():
        (corpus / name).write_bytes(bytes([0]) + b)
        (corpus / f"{name}-crc").write_bytes(bytes([1]) + b)
    longest = max(map(len, seeds.values()))
    flags = [f"-runs={runs}", f"-seed={seed + 1}", "-timeout=20", "-rss_limit_mb=2048", f"-max_len={longest * 2}"]
    atheris.Setup([sys.argv[0], *flags, str(corpus)], one)
    atheris.Fuzz()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--coverage", action="store_true", help="coverage-guided with atheris (pip install atheris)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.coverage:
        coverage_fuzz(args.n, args.seed)
    from vaekit.pretrained import load_from_files

    model = load_from_files(GOLDEN / "tiny-codec.safetensors", GOLDEN / "tiny-codec.json")
    data = (GOLDEN / "golden.vkc").read_bytes()
    t = time.perf_counter()
    c = fuzz(data, model, args.n - 2 * (args.n // 3), args.seed)  # any other exception propagates: a failure
    for i, alpha in enumerate((False, True)):  # a third with a colour profile, a third with it and an alpha plane
        more = fuzz(with_extras(data, alpha), model, args.n // 3, args.seed + 1 + i)
        c = {k: c[k] + more[k] for k in c}
    print(
        f"{args.n} damaged files: {c['refused']} refused cleanly, {c['decoded']} decoded "
        f"to some image (damage behind a recomputed checksum), none crashed; {time.perf_counter() - t:.1f} s"
    )


if __name__ == "__main__":
    sys.exit(main())
