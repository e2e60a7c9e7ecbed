"""Feed randomly damaged .vkc files to the decoder: every one must decode or be refused
with a VaekitError -- never another exception, a crash or a hang.

    python scripts/fuzz_vkc.py -n 10000        # the full count (tests run a few hundred)

Four kinds of damage, in turn: truncation; 1-4 random bytes changed; and the
same with the CRC recomputed, so the damage gets past the checksum into the
header checks and the range decoder.
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


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from vaekit.pretrained import load_from_files

    model = load_from_files(GOLDEN / "tiny-codec.safetensors", GOLDEN / "tiny-codec.json")
    data = (GOLDEN / "golden.vkc").read_bytes()
    t = time.perf_counter()
    c = fuzz(data, model, args.n, args.seed)  # any other exception propagates: a failure
    print(
        f"{args.n} damaged files: {c['refused']} refused cleanly, {c['decoded']} decoded "
        f"to some image (damage behind a recomputed checksum), none crashed; {time.perf_counter() - t:.1f} s"
    )


if __name__ == "__main__":
    sys.exit(main())
