"""The ``.vkc`` file format (versions 1 to 3).  All integers little-endian.

==========  =====  ===========================================================
offset      bytes  field
==========  =====  ===========================================================
0           4      magic ``89 56 4B 43`` ("\\x89VKC"; the high first byte
                   catches text-mode transfers, as PNG's does)
4           1      format version: the oldest that holds what the file
                   carries (1; 2 with a colour profile; 3 with an alpha
                   plane)
5           2      model id: a stable number from ``MODEL_IDS`` (0 = a local
                   model, named on the command line when decoding)
7           8      weights id: the first 8 bytes of the sha256 of the
                   model's tensors (``CompressionVAE.weights_id``);
                   decoding with other weights is refused
15          1      quality (1 = smallest file)
16          1      channels of the image (1 gray, 3 RGB)
17          4      height in pixels
21          4      width in pixels
25          2      tile size in units of 64 pixels (tiles are coded
                   independently, row-major)
27          4 * T  payload length of each of the T tiles (multiple of 4)
27 + 4T     4 + L  versions 2 and 3: L, then the image's ICC colour profile,
                   zlib-compressed (L bytes, at most ``MAX_PROFILE``; L = 0
                   in version 3 means none: sRGB)
...         4 + A  version 3 only: A, then the alpha plane (transparency),
                   lossless: an 8-bit gray PNG of the image's size
...         sum    the tiles' range-coder payloads, concatenated
end - 4     4      CRC-32 of every byte before it
==========  =====  ===========================================================

Every field is checked before it sizes anything: the image size against
``max_pixels``, the tile count and the profile's length against the bytes
present, the payload lengths against the file length, and the CRC before any
payload is decoded; the alpha plane's PNG header must name the image's size
before it is decoded (``alpha_plane``).  A file without a profile or an alpha
plane is written as version 1, byte for byte as before; its pixels are sRGB.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from ..errors import VaekitError

MAGIC = b"\x89VKC"
VERSION = 3  # the newest this vaekit writes (only where the image has an alpha plane) and reads
MAX_PROFILE = 1 << 20  # bytes of a compressed ICC profile (real ones are a few KB)
# Stable ids of shipped codec weights.  Never renumber; append only.  Retrained weights get a new
# id, and the old ones stay shipped under their own name so that every file written decodes.
MODEL_IDS = {
    1: "codec-hyperprior-r1",  # the first release (22k steps), named codec-hyperprior until it was superseded
    2: "codec-hyperprior-r2",  # the second release (41k BSDS steps)
    3: "codec-hyperprior-r3",  # the third release (photos fine-tune, checkerboard context)
    4: "codec-hyperprior-r4",  # the fourth release (photos fine-tune annealed, context retrained)
    5: "codec-hyperprior-r5",  # the fifth release (trained end to end), before the post-filter
    6: "codec-hyperprior-r6",  # the sixth release (id 5 with a post-filter, 5,000 steps)
    7: "codec-hyperprior-r7",  # the seventh release (the post-filter to step 11,000, the synthesis in strips)
    8: "codec-hyperprior",
}
_HEAD = struct.Struct("<4sBH8sBBIIH")
TILE_UNIT = 64
MAX_TILE = 4096  # px: one tile's decoding memory (the synthesis transform's activations) stays a few GB
MAX_SIDE = 1 << 20


@dataclass
class Header:
    model_id: int
    weights_id: bytes
    quality: int
    channels: int
    height: int
    width: int
    tile: int  # pixels
    icc: bytes | None = None  # the image's ICC colour profile (None: sRGB)
    alpha: bytes | None = None  # the image's alpha plane, PNG-coded (``alpha_png``; ``alpha_plane`` decodes it)

    def tiles(self) -> list[tuple[int, int, int, int]]:
        """(top, left, height, width) of every tile, row-major."""
        out = []
        for top in range(0, self.height, self.tile):
            for left in range(0, self.width, self.tile):
                out.append((top, left, min(self.tile, self.height - top), min(self.tile, self.width - left)))
        return out

    def n_tiles(self) -> int:
        return (-(-self.height // self.tile)) * (-(-self.width // self.tile))


def pack(header: Header, payloads: list[bytes]) -> bytes:
    if header.tile % TILE_UNIT or not 0 < header.tile <= MAX_TILE:
        raise VaekitError(f"tile size must be a positive multiple of {TILE_UNIT}, at most {MAX_TILE}")
    if len(payloads) != header.n_tiles():
        raise VaekitError("internal error: one payload per tile expected")
    profile = zlib.compress(header.icc, 9) if header.icc else b""
    if len(profile) > MAX_PROFILE:
        raise VaekitError(f"the colour profile is too large to store ({len(profile)} bytes compressed)")
    version = 3 if header.alpha else 2 if profile else 1
    head = _HEAD.pack(
        MAGIC,
        version,
        header.model_id,
        header.weights_id,
        header.quality,
        header.channels,
        header.height,
        header.width,
        header.tile // TILE_UNIT,
    )
    body = head + struct.pack(f"<{len(payloads)}I", *map(len, payloads))
    if version >= 2:
        body += struct.pack("<I", len(profile)) + profile
    if version == 3:
        body += struct.pack("<I", len(header.alpha)) + header.alpha
    body += b"".join(payloads)
    return body + struct.pack("<I", zlib.crc32(body))


def unpack(data: bytes, max_pixels: int) -> tuple[Header, list[bytes]]:
    """Parse and check a ``.vkc`` file; every failure is a one-line VaekitError."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise VaekitError("compressed data must be bytes")
    data = bytes(data)
    if len(data) < 4 or data[:4] != MAGIC:
        raise VaekitError("not a vaekit .vkc file (wrong magic bytes)")
    if len(data) < _HEAD.size + 4:
        raise VaekitError("truncated .vkc file (shorter than its header)")
    magic, version, model_id, wid, quality, channels, height, width, tile_units = _HEAD.unpack_from(data)
    if version not in range(1, VERSION + 1):
        raise VaekitError(
            f".vkc format version {version} is not supported by this vaekit (reads versions 1 to {VERSION})"
        )
    if channels not in (1, 3):
        raise VaekitError(f"corrupted .vkc file: {channels} channels")
    if not (0 < height <= MAX_SIDE and 0 < width <= MAX_SIDE) or height * width > max_pixels:
        raise VaekitError(
            f"corrupted or oversized .vkc file: {width}x{height} pixels "
            f"(limit {max_pixels}; raise VAEKIT_MAX_PIXELS to allow more)"
        )
    if tile_units == 0 or tile_units * TILE_UNIT > MAX_TILE:
        raise VaekitError(
            f"corrupted or hostile .vkc file: tile size {tile_units * TILE_UNIT} px (1..{MAX_TILE} allowed), "
            "refused before decoding"
        )
    header = Header(model_id, wid, quality, channels, height, width, tile_units * TILE_UNIT)
    n = header.n_tiles()
    start = _HEAD.size + 4 * n
    if len(data) < start + 4:
        raise VaekitError("truncated .vkc file (tile table cut short)")
    if zlib.crc32(data[:-4]) != struct.unpack("<I", data[-4:])[0]:
        raise VaekitError("corrupted or truncated .vkc file (checksum mismatch)")
    lengths = struct.unpack_from(f"<{n}I", data, _HEAD.size)
    if version >= 2:
        k, start = _field(data, start, "colour profile", MAX_PROFILE, empty=version == 3)
        if k:
            try:
                header.icc = _inflate(data[start - k : start])
            except zlib.error:
                raise VaekitError("corrupted .vkc file (colour profile does not inflate)") from None
    if version == 3:
        k, start = _field(data, start, "alpha plane", len(data), empty=False)
        header.alpha = data[start - k : start]
        if _png_size(header.alpha) != (width, height):
            raise VaekitError("corrupted .vkc file (the alpha plane is not an 8-bit gray PNG of the image's size)")
    if sum(lengths) != len(data) - 4 - start or any(k % 4 for k in lengths):
        raise VaekitError("corrupted .vkc file (payload lengths do not match the file)")
    payloads, pos = [], start
    for k in lengths:
        payloads.append(data[pos : pos + k])
        pos += k
    return header, payloads


def _field(data: bytes, start: int, what: str, cap: int, empty: bool) -> tuple[int, int]:
    """A length-prefixed field at ``start``, checked against the bytes present (room for the CRC kept):
    (its length, the offset after it)."""
    if len(data) < start + 8:
        raise VaekitError(f"truncated .vkc file ({what} cut short)")
    (k,) = struct.unpack_from("<I", data, start)
    if not (0 if empty else 1) <= k <= min(cap, len(data) - start - 8):
        raise VaekitError(f"corrupted .vkc file ({what} length does not match the file)")
    return k, start + 4 + k


def alpha_png(plane: np.ndarray) -> bytes:
    """An H x W uint8 alpha plane as the lossless PNG a version 3 file stores."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(plane, dtype=np.uint8)).save(buf, format="PNG", compress_level=9)
    return buf.getvalue()


def _png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from an 8-bit gray PNG's header, read without decoding; None for anything else."""
    if len(data) < 33 or data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        return None
    width, height, depth, colour = struct.unpack_from(">IIBB", data, 16)
    return (width, height) if (depth, colour) == (8, 0) else None


def alpha_plane(header: Header) -> np.ndarray | None:
    """The alpha plane of a file (H x W uint8), or None.  Its size was checked by :func:`unpack`, so decoding
    allocates no more than the image's pixels."""
    from PIL import Image

    if header.alpha is None:
        return None
    try:
        with Image.open(io.BytesIO(header.alpha), formats=["PNG"]) as im:
            if im.size != (header.width, header.height) or im.mode != "L":
                raise ValueError("size")
            return np.asarray(im)
    except (OSError, ValueError, SyntaxError):
        raise VaekitError("corrupted .vkc file (the alpha plane does not decode)") from None


def _inflate(data: bytes) -> bytes:
    """A stored profile, inflated to at most 16 times ``MAX_PROFILE`` (a zlib bomb is refused, not expanded)."""
    d = zlib.decompressobj()
    out = d.decompress(data, 16 * MAX_PROFILE)
    if d.unconsumed_tail or not d.eof:
        raise zlib.error("profile too large or cut short")
    return out
