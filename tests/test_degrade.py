import numpy as np
import pytest
from PIL import Image

from vaekit import degrade
from vaekit.baselines import BASELINES
from vaekit.errors import VaekitError


def test_masks_have_their_documented_sizes_and_are_seeded():
    shape = (120, 160)
    assert degrade.mask_box(shape).mean() == pytest.approx(0.25, abs=0.01)
    assert degrade.make_mask("pixels0.8", shape, seed=1).mean() == pytest.approx(0.8, abs=0.02)
    fr = {w: degrade.make_mask(f"strokes-{w}", shape, seed=3).mean() for w in ("thin", "medium", "thick")}
    assert fr["thin"] < fr["medium"] < fr["thick"] < 0.45 and fr["thin"] >= 0.05
    assert np.array_equal(degrade.make_mask("strokes-thin", shape, 4), degrade.make_mask("strokes-thin", shape, 4))
    assert not np.array_equal(degrade.make_mask("strokes-thin", shape, 4), degrade.make_mask("strokes-thin", shape, 5))
    assert 0.01 < degrade.make_mask("text", shape, 0).mean() < 0.3
    with pytest.raises(VaekitError):
        degrade.make_mask("circle", shape)


def test_read_mask_checks(tmp_path):
    m = np.zeros((20, 30), np.uint8)
    m[5:10, 5:10] = 200
    Image.fromarray(m).convert("RGB").save(tmp_path / "m.png")
    got = degrade.read_mask(tmp_path / "m.png", (20, 30, 3))
    assert got.sum() == 25
    with pytest.raises(VaekitError, match="30x20"):
        degrade.read_mask(tmp_path / "m.png", (21, 30))
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(tmp_path / "empty.png")
    Image.fromarray(np.full((20, 30), 255, np.uint8)).save(tmp_path / "full.png")
    (tmp_path / "x.png").write_text("not an image")
    for f in ("empty.png", "full.png", "x.png", "missing.png"):
        with pytest.raises(VaekitError):
            degrade.read_mask(tmp_path / f, (20, 30))


@pytest.mark.parametrize("method", sorted(BASELINES["inpaint"]))
def test_inpainting_baselines_fill_the_hole_and_keep_known_pixels(method):
    yy, xx = np.mgrid[0:48, 0:64] / 64.0
    img = np.stack([0.2 + 0.6 * xx, 0.5 + 0.3 * yy, 0.4 + 0 * xx], -1)
    mask = degrade.mask_box(img.shape)
    holed = np.where(mask[..., None], 0.0, img)
    out = BASELINES["inpaint"][method](holed, mask)
    assert np.array_equal(out[~mask], img[~mask])
    err_hole = np.abs(out[mask] - img[mask]).mean()
    assert err_hole < np.abs(holed[mask] - img[mask]).mean()


def test_a_mask_bomb_is_refused_from_its_header(tmp_path):
    """A PNG whose header declares 100000 x 100000 is refused before any pixel is decoded."""
    import struct
    import zlib

    from vaekit.errors import VaekitError

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    head = chunk(b"IHDR", struct.pack(">IIBBBBB", 100000, 100000, 8, 0, 0, 0, 0))
    (tmp_path / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + head + chunk(b"IDAT", zlib.compress(b"\0" * 99)))
    with pytest.raises(VaekitError, match="but the image is"):
        degrade.read_mask(tmp_path / "bomb.png", (40, 48))
    with pytest.raises(VaekitError, match="megapixels"):
        degrade.read_mask(tmp_path / "bomb.png")
