"""Classical codecs: ``encode(uint8 H x W x 3, quality) -> bytes`` and ``decode(bytes) -> uint8 H x W x 3``.

Each entry also lists the qualities a rate-distortion sweep visits.  One thread everywhere; AVIF at speed 6 with
4:4:4 chroma, JPEG XL at effort 7 (the libraries' usual settings).
"""

from __future__ import annotations

import io
from typing import Callable, NamedTuple

import numpy as np


class Codec(NamedTuple):
    encode: Callable[[np.ndarray, int], bytes]
    decode: Callable[[bytes], np.ndarray]
    qualities: tuple


def _pil_encode(fmt: str):
    def encode(img: np.ndarray, q: int) -> bytes:
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format=fmt, quality=int(q))
        return buf.getvalue()

    return encode


def _pil_decode(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _avif_encode(img: np.ndarray, q: int) -> bytes:
    import imagecodecs

    return bytes(imagecodecs.avif_encode(img, level=int(q), speed=6, pixelformat="444", numthreads=1))


def _avif_decode(data: bytes) -> np.ndarray:
    import imagecodecs

    return np.asarray(imagecodecs.avif_decode(data, numthreads=1))[..., :3]


def _jxl_encode(img: np.ndarray, q: int) -> bytes:
    import imagecodecs

    return bytes(imagecodecs.jpegxl_encode(img, level=int(q), effort=7, numthreads=1))


def _jxl_decode(data: bytes) -> np.ndarray:
    import imagecodecs

    return np.asarray(imagecodecs.jpegxl_decode(data, numthreads=1))[..., :3]


_FINE = tuple(range(5, 100, 5))
_COARSE = (5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95)
CODECS = {
    "jpeg": Codec(_pil_encode("JPEG"), _pil_decode, _FINE),
    "webp": Codec(_pil_encode("WEBP"), _pil_decode, _FINE),
    "avif": Codec(_avif_encode, _avif_decode, _COARSE),
    "jxl": Codec(_jxl_encode, _jxl_decode, _COARSE),
}
