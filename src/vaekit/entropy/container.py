"""The ``.vkc`` file format (versions 1 and 2).  All integers little-endian.

==========  =====  ===========================================================
offset      bytes  field
==========  =====  ===========================================================
0           4      magic ``89 56 4B 43`` ("\\x89VKC"; the high first byte
                   catches text-mode transfers, as PNG's does)
4           1      format version (1; 2 where a colour profile follows the
                   tile table)
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
27 + 4T     4 + L  version 2 only: L, then the image's ICC colour profile,
                   zlib-compressed (L bytes, at most ``MAX_PROFILE``)
...         sum    the tiles' range-coder payloads, concatenated
end - 4     4      CRC-32 of every byte before it
==========  =====  ===========================================================

Every field is checked before it sizes anything: the image size against
``max_pixels``, the tile count and the profile's length against the bytes
present, the payload lengths against the file length, and the CRC before any
payload is decoded.  A file without a profile is written as version 1, byte for
byte as before; its pixels are sRGB.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from ..errors import VaekitError

MAGIC = b"\x89VKC"
VERSION = 2  # the newest this vaekit writes (only where the image has a colour profile) and reads
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

    def tiles(self) -> list[tuple[int, int, int, int]]:
        """(top, left, height, width) of every tile, row-major."""
        out = []
        for top in range(0, self.height, self.tile):
            for left in range(0, self.width, self.tile):
                out.append((top, left, min(self.tile, self.height - top), min(self.tile, self.width - left)))
        return out

    def n_tiles(self) -> int:
        return (-(-self.height // self.tile)) * (-(-self.width // self.tile))


def header_size(n_tiles: int, icc: bytes | None = None) -> int:
    """Bytes of a file that are not range-coder payload: header, tile table, colour profile, CRC."""
    return _HEAD.size + 4 * n_tiles + 4 + (4 + len(zlib.compress(icc, 9)) if icc else 0)


def pack(header: Header, payloads: list[bytes]) -> bytes:
    if header.tile % TILE_UNIT or not 0 < header.tile <= MAX_TILE:
        raise VaekitError(f"tile size must be a positive multiple of {TILE_UNIT}, at most {MAX_TILE}")
    if len(payloads) != header.n_tiles():
        raise VaekitError("internal error: one payload per tile expected")
    profile = zlib.compress(header.icc, 9) if header.icc else b""
    if len(profile) > MAX_PROFILE:
        raise VaekitError(f"the colour profile is too large to store ({len(profile)} bytes compressed)")
    head = _HEAD.pack(
        MAGIC,
        2 if profile else 1,
        header.model_id,
        header.weights_id,
        header.quality,
        header.channels,
        header.height,
        header.width,
        header.tile // TILE_UNIT,
    )
    body = head + struct.pack(f"<{len(payloads)}I", *map(len, payloads))
    if profile:
        body += struct.pack("<I", len(profile)) + profile
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
    if version not in (1, 2):
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
    if version == 2:
        if len(data) < start + 8:
            raise VaekitError("truncated .vkc file (colour profile cut short)")
        (k,) = struct.unpack_from("<I", data, start)
        if not 0 < k <= min(MAX_PROFILE, len(data) - start - 8):
            raise VaekitError("corrupted .vkc file (colour profile length does not match the file)")
        try:
            header.icc = _inflate(data[start + 4 : start + 4 + k])
        except zlib.error:
            raise VaekitError("corrupted .vkc file (colour profile does not inflate)") from None
        start += 4 + k
    if sum(lengths) != len(data) - 4 - start or any(k % 4 for k in lengths):
        raise VaekitError("corrupted .vkc file (payload lengths do not match the file)")
    payloads, pos = [], start
    for k in lengths:
        payloads.append(data[pos : pos + k])
        pos += k
    return header, payloads


def _inflate(data: bytes) -> bytes:
    """A stored profile, inflated to at most 16 times ``MAX_PROFILE`` (a zlib bomb is refused, not expanded)."""
    d = zlib.decompressobj()
    out = d.decompress(data, 16 * MAX_PROFILE)
    if d.unconsumed_tail or not d.eof:
        raise zlib.error("profile too large or cut short")
    return out
