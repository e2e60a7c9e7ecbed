"""Range coding of integer symbols with integer probability tables (constriction).

A ``TableCoder`` holds one table per *row* (a channel of ``z``, a scale level
of ``y``).  Symbols are coded grouped by row, rows in increasing order,
positions in raster order inside a row -- an order the decoder can rebuild
from the rows alone.  Values outside a row's table are coded as the escape
symbol followed by an Elias-gamma code of the value (uniform binary digits),
so no value is ever clipped.
"""

from __future__ import annotations

import constriction
import numpy as np

from ..errors import VaekitError
from .models import PRECISION

_model = constriction.stream.model
_queue = constriction.stream.queue
ESCAPE_MAX_BITS = 31  # |escaped value| < 2**30


def _zigzag(v):
    return np.where(v >= 0, 2 * v, -2 * v - 1)


def _unzigzag(u):
    return np.where(u % 2 == 0, u // 2, -(u + 1) // 2)


class TableCoder:
    def __init__(self, table, offsets, lengths):
        self.table = np.asarray(table, dtype=np.int64)
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.lengths = np.asarray(lengths, dtype=np.int64)
        if self.lengths.min() < 2 or (self.table.sum(1) != (1 << PRECISION)).any():
            raise VaekitError("the model's probability tables are damaged (rows do not sum to 2**PRECISION)")
        self._models: dict[int, object] = {}
        self._bits = -np.log2(np.maximum(self.table, 1) / float(1 << PRECISION))

    def model(self, r: int):
        m = self._models.get(r)
        if m is None:
            p = self.table[r, : self.lengths[r]].astype(np.float64) / float(1 << PRECISION)
            m = self._models[r] = _model.Categorical(p, perfect=False)
        return m

    def encode(self, encoder, values: np.ndarray, rows: np.ndarray) -> float:
        """Code ``values`` (int, flat) with the tables of ``rows`` (flat); returns the ideal bits."""
        values = np.asarray(values, dtype=np.int64).ravel()
        rows = np.asarray(rows, dtype=np.int64).ravel()
        order = np.argsort(rows, kind="stable")
        values, rows = values[order], rows[order]
        sym = values - self.offsets[rows]
        esc_sym = self.lengths[rows] - 1
        escaped = (sym < 0) | (sym >= esc_sym)
        sym = np.where(escaped, esc_sym, sym)
        bits = float(self._bits[rows, sym].sum())
        bounds = np.flatnonzero(np.diff(rows)) + 1
        for start, stop in zip(np.r_[0, bounds], np.r_[bounds, rows.size]):
            encoder.encode(sym[start:stop].astype(np.int32), self.model(int(rows[start])))
        if escaped.any():
            bits += self._encode_escapes(encoder, values[escaped])
        return bits

    def decode(self, decoder, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64).ravel()
        order = np.argsort(rows, kind="stable")
        srows = rows[order]
        sym = np.empty(rows.size, dtype=np.int64)
        bounds = np.flatnonzero(np.diff(srows)) + 1
        for start, stop in zip(np.r_[0, bounds], np.r_[bounds, srows.size]):
            sym[start:stop] = decoder.decode(self.model(int(srows[start])), int(stop - start))
        values = sym + self.offsets[srows]
        escaped = sym == self.lengths[srows] - 1
        if escaped.any():
            values[escaped] = self._decode_escapes(decoder, int(escaped.sum()))
        out = np.empty_like(values)
        out[order] = values
        return out

    @staticmethod
    def _encode_escapes(encoder, values) -> float:
        u = _zigzag(values.astype(np.int64)) + 1  # >= 1
        if (u >= (1 << (ESCAPE_MAX_BITS - 1))).any():
            raise VaekitError("a latent value is too large to code; the input image is probably not an image")
        nbits = np.array([int(x).bit_length() for x in u], dtype=np.int32)
        encoder.encode(nbits, _model.Uniform(ESCAPE_MAX_BITS + 1))
        bits = len(u) * np.log2(ESCAPE_MAX_BITS + 1)
        for x, nb in zip(u, nbits):
            rest = int(x) - (1 << int(nb - 1))  # the digits after the leading one
            for k in range(0, int(nb) - 1, 8):
                width = min(8, int(nb) - 1 - k)
                encoder.encode(int((rest >> k) & ((1 << width) - 1)), _model.Uniform(max(2, 1 << width)))
                bits += max(1, width)
        return float(bits)

    @staticmethod
    def _decode_escapes(decoder, n: int) -> np.ndarray:
        nbits = np.asarray(decoder.decode(_model.Uniform(ESCAPE_MAX_BITS + 1), n), dtype=np.int64)
        out = np.empty(n, dtype=np.int64)
        for i, nb in enumerate(nbits):
            nb = max(1, int(nb))
            rest = 0
            for k in range(0, nb - 1, 8):
                width = min(8, nb - 1 - k)
                rest |= int(decoder.decode(_model.Uniform(max(2, 1 << width)))) << k
            out[i] = (1 << (nb - 1)) + rest
        return _unzigzag(out - 1)


def new_encoder():
    return _queue.RangeEncoder()


def finish(encoder) -> bytes:
    return encoder.get_compressed().astype("<u4").tobytes()


def new_decoder(data: bytes):
    if len(data) % 4:
        raise VaekitError("corrupted stream: its length is not a whole number of words")
    return _queue.RangeDecoder(np.frombuffer(data, dtype="<u4").astype(np.uint32))
