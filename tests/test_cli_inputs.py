"""Every image command against a corpus of bad and odd inputs, and against bad output paths: bad input gets one
line and exit 2, odd but valid input works, nothing half-written is left; plus a property test of the reader."""

import io
import struct
import zlib

import imagecodecs
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from vaekit.cli import main
from vaekit.errors import VaekitError
from vaekit.io import read_array


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_header(w: int, h: int, depth=8, colour=0) -> bytes:
    head = _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + head + _chunk(b"IDAT", zlib.compress(b"\0" * 99)) + _chunk(b"IEND", b"")


def _photo(h=40, w=48, c=3):
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 5, y * 6, (x + y) * 3], axis=2)[..., :c] % 256
    return base.astype(np.uint8).squeeze()


def _corpus(d):
    """name -> (path, expected exit code, words the one line must hold); built from tiny generated files."""
    good = d / "good.png"
    Image.fromarray(_photo()).save(good)
    files = {}

    def bad(name, data, words):
        p = d / name
        p.write_bytes(data)
        files[name] = (p, 2, words)

    buf = io.BytesIO()
    Image.fromarray(_photo()).save(buf, format="PNG")
    bad("text.png", b"this is not an image at all", "not an image")
    bad("empty.png", b"", "")
    bad("truncated.png", buf.getvalue()[: len(buf.getvalue()) // 2], "truncated")
    bad("bomb.png", _png_header(100_000, 100_000), "pixels")
    nan = _photo().astype(np.float32) / 255
    nan[3, 4, 1] = np.nan
    np.save(d / "nan.npy", nan)
    files["nan.npy"] = (d / "nan.npy", 2, "NaN")
    inf = _photo().astype(np.float32) / 255
    inf[0, 0, 0] = np.inf
    np.save(d / "inf.npy", inf)
    files["inf.npy"] = (d / "inf.npy", 2, "")
    np.save(d / "cube.npy", np.zeros((4, 4, 4, 4), np.float32))
    files["cube.npy"] = (d / "cube.npy", 2, "shape")
    odd = {
        "gray.png": Image.fromarray(_photo(c=1)),
        "gray_alpha.png": Image.fromarray(np.stack([_photo(c=1), np.full((40, 48), 200, np.uint8)], 2), "LA"),
        "rgba.png": Image.fromarray(np.concatenate([_photo(), np.full((40, 48, 1), 255, np.uint8)], 2), "RGBA"),
        "bits1.png": Image.fromarray(_photo(c=1) > 100),
        "palette.png": Image.fromarray(_photo()).convert("P"),
        "gray16.png": Image.fromarray((_photo(c=1).astype(np.uint16) * 257)),
        "cmyk.jpg": Image.fromarray(_photo()).convert("CMYK"),
    }
    for name, im in odd.items():
        im.save(d / name)
        files[name] = (d / name, 0, "")
    (d / "rgb16.png").write_bytes(imagecodecs.png_encode(_photo().astype(np.uint16) * 251 + 3))
    files["rgb16.png"] = (d / "rgb16.png", 0, "")
    return good, files


DEEP = {"gray16.png", "rgb16.png"}  # 16-bit files, whose restored images come back 16-bit


COMMANDS = {  # command -> extra arguments; every one reads an image and writes one
    "denoise": ["--sigma", "20"],
    "inpaint": ["--box", "10,10,20,20", "--method", "telea"],
    "compress": [],
    "compensate": ["--method", "gray-world"],
    "enhance": ["--ops", "contrast"],
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_against_bad_and_odd_inputs(command, tmp_path, capsys):
    _, corpus = _corpus(tmp_path)
    suffix = ".vkc" if command == "compress" else ".png"
    for name, (path, code, words) in corpus.items():
        out = tmp_path / "out" / (name + suffix)
        out.parent.mkdir(exist_ok=True)
        capsys.readouterr()
        rc = main([command, str(path), "-o", str(out), *COMMANDS[command]])
        err = capsys.readouterr().err.strip()
        assert rc == code, (command, name, err)
        if code:
            assert len(err.splitlines()) == 1 and err.startswith("vaekit: error:"), (command, name, err)
            assert words.lower() in err.lower() and "Traceback" not in err, (command, name, err)
            assert not out.exists(), (command, name)
        else:
            assert out.is_file() and out.stat().st_size > 0, (command, name)
            if command != "compress":  # PNG bit depth: byte 24 of the file
                assert out.read_bytes()[24] == (16 if name in DEEP else 8), (command, name)
            else:  # the codec keeps 8 bits, and says so where a file had more
                assert ("8 bits per sample" in err) == (name in DEEP), (command, name, err)
            assert all(line.startswith("vaekit: warning:") for line in err.splitlines()), (command, name, err)
        assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")], (command, name)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_against_bad_output_paths(command, tmp_path, capsys):
    good, _ = _corpus(tmp_path)
    plain = tmp_path / "plain.txt"
    plain.write_text("a file, not a folder")
    suffix = ".vkc" if command == "compress" else ".png"
    for out in (plain / ("x" + suffix), tmp_path / "a" / "plain.txt" / "b" / ("x" + suffix), "/proc/x" + suffix):
        if str(out).startswith(str(tmp_path / "a")):
            (tmp_path / "a").mkdir(exist_ok=True)
            (tmp_path / "a" / "plain.txt").write_text("x")
        capsys.readouterr()
        rc = main([command, str(good), "-o", str(out), *COMMANDS[command]])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, (command, out, err)
    wrong = tmp_path / ("x.png" if command == "compress" else "x.txt")  # a name its writer cannot honour
    rc = main([command, str(good), "-o", str(wrong), *COMMANDS[command]])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("vaekit: error:") and "give a name ending in" in err, (command, err)
    assert not wrong.exists()


@pytest.mark.parametrize(
    "argv, low",
    [
        (["eval", "mnist-vae", "--data-dir", "x", "--limit"], 1),
        (["bench", "denoise", "--limit"], 1),
        (["bench", "compress", "--limit"], 1),
        (["eval", "mnist-vae", "--data-dir", "x", "--batch-size"], 1),
        (["denoise-fit", "x", "-o", "y", "--steps"], 1),
        (["denoise", "x.png", "-o", "y.png", "--max-pixels"], 1),
        (["denoise", "x.png", "-o", "y.png", "--tile"], 64),
        (["inpaint", "x.png", "-o", "y.png", "--tile"], 64),
    ],
)
def test_counts_and_sides_under_their_least_are_refused(argv, low, capsys):
    """``--limit 0`` ran every image, ``--batch-size 0`` raised, a tile of 8 was silently made 64."""
    for value in ("0", "-2", str(low - 1)):
        capsys.readouterr()
        assert main([*argv, value]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"at least {low}" in err, (argv, err)


def test_mask_bomb_through_the_cli_is_refused(tmp_path, capsys):
    good, _ = _corpus(tmp_path)
    (tmp_path / "bomb.png").write_bytes(_png_header(100_000, 100_000))
    rc = main(["inpaint", str(good), "--mask", str(tmp_path / "bomb.png"), "-o", str(tmp_path / "o.png")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and not (tmp_path / "o.png").exists()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    w=st.integers(0, 2**31 - 1),
    h=st.integers(0, 2**31 - 1),
    depth=st.sampled_from([1, 2, 4, 8, 16, 3, 0, 255]),
    colour=st.sampled_from([0, 2, 3, 4, 6, 1, 7]),
    tail=st.binary(max_size=64),
)
def test_the_reader_answers_any_png_header_with_an_array_or_one_clear_error(tmp_path, w, h, depth, colour, tail):
    p = tmp_path / "h.png"
    data = _png_header(w, h, depth, colour)
    p.write_bytes(data[:33] + tail if tail else data)
    try:
        a = read_array(p, max_pixels=1_000_000)
    except VaekitError as e:
        assert "\n" not in str(e) and str(e)
    else:
        assert a.dtype == np.float32 and a.shape[0] * a.shape[1] <= 1_000_000


def test_more_threads_than_cores_are_capped_with_a_warning(tmp_path, capsys):
    import os

    import torch

    good, _ = _corpus(tmp_path)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    before = torch.get_num_threads()
    try:
        argv = ["enhance", str(good), "-o", str(tmp_path / "e.png"), "--ops", "contrast", "--threads", str(cores + 50)]
        assert main(argv) == 0
        assert torch.get_num_threads() == cores
    finally:
        torch.set_num_threads(before)
    assert f"vaekit: warning: --threads {cores + 50}: this process may use {cores} cores" in capsys.readouterr().err


def test_help_answers_without_loading_torch():
    """`vaekit --help` and each command's help come at once: the package and the parser load torch only on use."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from vaekit.cli import main\n"
        "for argv in (['--help'], ['denoise', '--help'], ['compress', '--help'], ['augment', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print('torch' in sys.modules, 'scipy' in sys.modules)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "False False"
    code = "import vaekit\nprint(callable(vaekit.io.read_array), callable(vaekit.denoise), hasattr(vaekit, 'nope'))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.split() == ["True", "True", "False"], r.stderr  # submodules and functions, loaded on use
