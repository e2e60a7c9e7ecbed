import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from vaekit.errors import VaekitError
from vaekit.io import grid, read_array, read_image, write_image


def test_gray_rgb_palette_and_16bit(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    t = read_image(tmp_path / "a.png")
    assert t.shape == (3, 5, 7) and t.dtype == torch.float32
    assert torch.allclose(t, torch.from_numpy(rgb).permute(2, 0, 1).float() / 255)
    Image.fromarray(rgb[..., 0]).save(tmp_path / "g.png")
    assert read_image(tmp_path / "g.png").shape == (1, 5, 7)
    assert read_image(tmp_path / "g.png", mode="RGB").shape == (3, 5, 7)
    Image.fromarray(rgb).convert("P").save(tmp_path / "p.png")
    assert read_image(tmp_path / "p.png").shape == (3, 5, 7)
    g16 = np.arange(35, dtype=np.uint16).reshape(5, 7) * 1800
    Image.fromarray(g16).save(tmp_path / "d.png")
    t16 = read_image(tmp_path / "d.png")
    assert torch.allclose(t16[0], torch.from_numpy(g16.astype(np.float32) / 65535), atol=1e-6)
    for ext in ("jpg", "webp", "tif"):
        Image.fromarray(rgb).save(tmp_path / f"x.{ext}")
        assert read_image(tmp_path / f"x.{ext}").shape == (3, 5, 7)


def test_float_tiff_and_npy_keep_values(tmp_path):
    f = np.linspace(-0.2, 1.3, 20, dtype=np.float32).reshape(4, 5)
    Image.fromarray(f, mode="F").save(tmp_path / "f.tif")
    assert torch.allclose(read_image(tmp_path / "f.tif")[0], torch.from_numpy(f))
    np.save(tmp_path / "n.npy", f)
    assert torch.allclose(read_image(tmp_path / "n.npy")[0], torch.from_numpy(f))
    Image.fromarray(f * 255, mode="F").save(tmp_path / "f255.tif")  # another scale: one sentence, not a guess
    with pytest.raises(VaekitError, match=r"f255.tif holds floats from -51 to 331.5.*scaled to \[0, 1\]"):
        read_image(tmp_path / "f255.tif")


def test_alpha_dropped_with_warning_or_kept(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 3] = 128
    Image.fromarray(rgba).save(tmp_path / "a.png")
    with pytest.warns(UserWarning, match="alpha"):
        assert read_image(tmp_path / "a.png").shape == (3, 4, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_image(tmp_path / "a.png", alpha="keep").shape == (4, 4, 4)


def test_only_the_first_frame_is_read_and_said_so(tmp_path):
    """An animated GIF or a multi-page TIFF gives its first frame, with a warning that names how many it holds."""
    frames = [Image.fromarray(np.full((6, 8, 3), v, np.uint8)) for v in (10, 200, 90)]
    for name in ("a.gif", "a.tif"):
        frames[0].save(tmp_path / name, save_all=True, append_images=frames[1:])
        with pytest.warns(UserWarning, match="3 frames"):
            assert np.allclose(read_array(tmp_path / name), 10 / 255, atol=0.02)
    frames[0].save(tmp_path / "one.gif")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_array(tmp_path / "one.gif")


def test_exif_orientation_applied(tmp_path):
    arr = np.zeros((4, 8), np.uint8)  # wide image
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 CW on display
    im.save(tmp_path / "o.jpg", exif=exif)
    assert read_image(tmp_path / "o.jpg").shape == (1, 8, 4)


def test_limits_and_bad_files(tmp_path):
    Image.fromarray(np.zeros((100, 100), np.uint8)).save(tmp_path / "big.png")
    with pytest.raises(VaekitError, match="megapixels"):
        read_image(tmp_path / "big.png", max_pixels=5000)
    # the limit is checked from the header: a truncated huge file is refused for its size, not decoded
    Image.fromarray(np.zeros((3000, 3000), np.uint8)).save(tmp_path / "huge.png")
    data = (tmp_path / "huge.png").read_bytes()
    (tmp_path / "huge_trunc.png").write_bytes(data[:200])
    with pytest.raises(VaekitError, match="over the limit"):
        read_image(tmp_path / "huge_trunc.png", max_pixels=1_000_000)
    with pytest.raises(VaekitError, match="huge_trunc.png"):
        read_image(tmp_path / "huge_trunc.png")
    (tmp_path / "x.png").write_text("not an image")
    with pytest.raises(VaekitError, match="x.png"):
        read_image(tmp_path / "x.png")
    with pytest.raises(VaekitError, match="does not exist"):
        read_image(tmp_path / "missing.png")


def test_env_pixel_limit(tmp_path, monkeypatch):
    Image.fromarray(np.zeros((50, 50), np.uint8)).save(tmp_path / "a.png")
    monkeypatch.setenv("VAEKIT_MAX_PIXELS", "100")
    with pytest.raises(VaekitError):
        read_image(tmp_path / "a.png")


def test_write_roundtrip_and_grid(tmp_path):
    x = torch.rand(3, 6, 9)
    p = write_image(tmp_path / "sub" / "o.png", x)
    assert not list(p.parent.glob("*.tmp"))
    back = read_image(p)
    assert (back - x).abs().max() <= 0.5 / 255 + 1e-6
    g = grid(torch.rand(5, 1, 4, 4), nrow=3, pad=1)
    assert g.shape == (1, 2 * 5 + 1, 3 * 5 + 1)


def test_16bit_color_png_and_tiff_keep_their_precision(tmp_path):
    import imagecodecs

    rgb16 = (np.arange(3 * 4 * 3).reshape(3, 4, 3) * 1000 + 7).astype(np.uint16)
    (tmp_path / "c.png").write_bytes(imagecodecs.png_encode(rgb16))
    (tmp_path / "c.tif").write_bytes(imagecodecs.tiff_encode(rgb16))
    want = torch.from_numpy(rgb16.astype(np.float32) / 65535).permute(2, 0, 1)
    for name in ("c.png", "c.tif"):
        assert torch.allclose(read_image(tmp_path / name), want, atol=1e-7), name
    rgba16 = np.concatenate([rgb16, np.full((3, 4, 1), 65535, np.uint16)], axis=2)
    (tmp_path / "a.png").write_bytes(imagecodecs.png_encode(rgba16))
    with pytest.warns(UserWarning, match="alpha"):
        assert torch.allclose(read_image(tmp_path / "a.png"), want, atol=1e-7)
    (tmp_path / "t.png").write_bytes((tmp_path / "c.png").read_bytes()[:60])
    with pytest.raises(VaekitError, match="t.png"):
        read_image(tmp_path / "t.png")


def test_16bit_sources_are_written_back_in_16_bits(tmp_path):
    import imagecodecs

    from vaekit.io import source_format

    rgb16 = (np.arange(5 * 6 * 3).reshape(5, 6, 3) * 701 + 11).astype(np.uint16)
    (tmp_path / "c.png").write_bytes(imagecodecs.png_encode(rgb16))
    Image.fromarray(rgb16[..., 0]).save(tmp_path / "g.png")
    Image.fromarray((rgb16 >> 8).astype(np.uint8)).save(tmp_path / "c8.png")
    np.save(tmp_path / "f.npy", rgb16.astype(np.float32) / 65535)
    bits = {p: source_format(tmp_path / p).bits for p in ("c.png", "g.png", "c8.png", "f.npy")}
    assert bits == {"c.png": 16, "g.png": 16, "c8.png": 8, "f.npy": 16}
    for name in ("c.png", "g.png"):
        a = read_array(tmp_path / name)
        write_image(tmp_path / ("out_" + name), a, bits=16)
        back = imagecodecs.png_decode((tmp_path / ("out_" + name)).read_bytes())
        assert back.dtype == np.uint16 and np.array_equal(back, rgb16 if name == "c.png" else rgb16[..., 0])
    write_image(tmp_path / "u8.png", np.asarray(Image.open(tmp_path / "c8.png")), bits=16)  # 8-bit data, scaled
    assert np.array_equal(imagecodecs.png_decode((tmp_path / "u8.png").read_bytes()), (rgb16 >> 8) * 257)
    with pytest.raises(ValueError, match="bits"):
        write_image(tmp_path / "x.png", np.zeros((2, 2)), bits=12)


def test_outputs_keep_the_colour_profile_of_their_source(tmp_path):
    """A Display P3 or Adobe RGB photo written back without its profile is shown as sRGB: colours shift."""
    from PIL import ImageCms

    from vaekit.cli import main
    from vaekit.io import SourceFormat, source_format

    lab = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()  # any profile that is not sRGB
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    rgb = (np.arange(24 * 32 * 3).reshape(24, 32, 3) * 7 % 256).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "p.jpg", icc_profile=lab, quality=95)
    src = source_format(tmp_path / "p.jpg")
    assert src == SourceFormat(8, lab) and src.foreign_profile and not SourceFormat(8, srgb).foreign_profile
    x = rgb.astype(np.float32) / 255
    for name, bits in (("o.png", 8), ("o16.png", 16), ("o.tif", 8), ("o16.tif", 16), ("o.jpg", 8), ("o.webp", 8)):
        write_image(tmp_path / name, x, bits, lab)
        with Image.open(tmp_path / name) as im:
            assert im.info.get("icc_profile") == lab, name
            im.load()  # the iCCP chunk leaves the PNG stream valid
    assert np.array_equal(read_image(tmp_path / "o16.png").permute(1, 2, 0).numpy(), x)
    assert (
        main(
            ["denoise", str(tmp_path / "p.jpg"), "--method", "gaussian", "--sigma", "5", "-o", str(tmp_path / "d.png")]
        )
        == 0
    )
    assert Image.open(tmp_path / "d.png").info.get("icc_profile") == lab
    assert main(["compress", str(tmp_path / "p.jpg"), "-o", str(tmp_path / "p.vkc"), "--quiet"]) == 0
    assert main(["decompress", str(tmp_path / "p.vkc"), "-o", str(tmp_path / "p.png"), "--quiet"]) == 0
    assert Image.open(tmp_path / "p.png").info.get("icc_profile") == lab  # the codec keeps it too
    Image.fromarray(rgb).save(tmp_path / "s.jpg", icc_profile=srgb, quality=95)
    assert main(["compress", str(tmp_path / "s.jpg"), "-o", str(tmp_path / "s.vkc"), "--quiet"]) == 0
    assert (tmp_path / "s.vkc").read_bytes()[4] == 1  # sRGB is what no profile means: not stored


def test_transparency_is_handed_back_by_the_image_commands(tmp_path):
    """A cut-out PNG denoised, inpainted, corrected or enhanced keeps its alpha (it was dropped); JPEG cannot."""
    from vaekit.cli import main
    from vaekit.io import read_with_alpha

    rng = np.random.default_rng(0)
    rgb = np.clip(rng.normal(128, 30, (32, 40, 3)), 0, 255).astype(np.uint8)
    alpha = np.full((32, 40), 255, np.uint8)
    alpha[:, :12], alpha[:, 12:16] = 0, 100
    Image.fromarray(np.dstack([rgb, alpha])).save(tmp_path / "cut.png")
    Image.fromarray(np.dstack([rgb[..., 0], alpha])).save(tmp_path / "gray.png")
    img, a = read_with_alpha(tmp_path / "cut.png")
    assert img.shape == (32, 40, 3) and np.array_equal(np.round(a * 255), alpha)
    assert read_with_alpha(tmp_path / "gray.png")[0].shape == (32, 40)
    runs = {
        "d.png": ["denoise", "cut.png", "--method", "gaussian", "--sigma", "10"],
        "g.png": ["denoise", "gray.png", "--method", "gaussian", "--sigma", "10"],
        "s": ["denoise", "cut.png", "--method", "gaussian", "--sigma", "10", "--samples", "2"],
        "i.png": ["inpaint", "cut.png", "--box", "20,4,30,12", "--method", "telea"],
        "c.png": ["compensate", "cut.png", "--method", "gray-world"],
        "e.png": ["enhance", "cut.png", "--ops", "contrast,sharpen"],
        "d16.tif": ["denoise", "cut.png", "--method", "gaussian", "--sigma", "10"],
        "d.webp": ["denoise", "cut.png", "--method", "gaussian", "--sigma", "10"],
    }
    for out, argv in runs.items():
        argv = [a if not a.endswith(".png") else str(tmp_path / a) for a in argv]
        assert main([*argv, "-o", str(tmp_path / out), "--quiet"]) == 0, out
        written = tmp_path / out / "mean.png" if out == "s" else tmp_path / out
        back = read_array(written, alpha="keep")
        assert back.shape[2] == (2 if out == "g.png" else 4) and np.array_equal(np.round(back[..., -1] * 255), alpha)
    moved = tmp_path / "r.png"  # a rotation turns the transparency with the pixels; the corners it uncovers are clear
    assert main(["enhance", str(tmp_path / "cut.png"), "--ops", "rotate=90", "-o", str(moved), "--quiet"]) == 0
    turned = np.round(read_array(moved, alpha="keep")[..., -1] * 255)
    assert turned[:, :4].max() == 0 and turned[:16, 8:32].min() == 255 and turned[-4:].max() == 0
    with pytest.warns(UserWarning, match="JPEG holds no transparency"):
        write_image(tmp_path / "o.jpg", rgb, alpha=alpha / 255)
    assert Image.open(tmp_path / "o.jpg").mode == "RGB"


def test_the_output_name_picks_the_format(tmp_path):
    rgb16 = (np.arange(5 * 6 * 3).reshape(5, 6, 3) * 701 + 11).astype(np.uint16)
    x = rgb16.astype(np.float32) / 65535
    lossless = {"o.png": "PNG", "o.tif": "TIFF", "o.TIFF": "TIFF", "o.webp": "WEBP", "o.bmp": "BMP"}
    for name, fmt in lossless.items():
        write_image(tmp_path / name, x)
        with Image.open(tmp_path / name) as im:
            assert im.format == fmt, name
            assert np.array_equal(np.asarray(im.convert("RGB")), (rgb16 / 257).round().astype(np.uint8)), name
    write_image(tmp_path / "d.tif", x, bits=16)  # TIFF keeps 16 bits, as PNG does
    assert torch.allclose(read_image(tmp_path / "d.tif"), torch.from_numpy(x).permute(2, 0, 1), atol=1e-7)
    with pytest.warns(UserWarning, match="8 bits"):
        write_image(tmp_path / "d.jpg", x, bits=16)
    with Image.open(tmp_path / "d.jpg") as im:
        assert im.format == "JPEG" and im.mode == "RGB"
    with pytest.raises(VaekitError, match="give a name ending in"):
        write_image(tmp_path / "o.gif", x)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*lossless, "d.tif", "d.jpg"])


@pytest.mark.parametrize("orientation", range(1, 9))
def test_array_orientation_matches_pillow(tmp_path, orientation):
    from PIL import ImageOps

    from vaekit.io import _orient

    im = Image.fromarray(np.arange(6 * 4 * 3, dtype=np.uint8).reshape(4, 6, 3))
    exif = im.getexif()
    exif[0x0112] = orientation
    im.save(tmp_path / "o.png", exif=exif)
    with Image.open(tmp_path / "o.png") as im2:
        assert np.array_equal(_orient(np.asarray(im2), im2), np.asarray(ImageOps.exif_transpose(im2)))
