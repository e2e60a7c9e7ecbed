"""The shipped model, generation, evaluation and the CLI contract."""

import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import MNIST_DIR
from PIL import Image

import vaekit
from vaekit.bench.common import read_results
from vaekit.cli import main
from vaekit.errors import VaekitError
from vaekit.pretrained import WEIGHTS_DIR, load_from_files


@pytest.fixture(scope="module")
def model():
    return vaekit.load_pretrained("mnist-vae")


def test_shipped_card_is_complete(model):
    card = model.card
    for key in ("arch", "arch_args", "data", "training", "metrics", "sha256", "parameters"):
        assert key in card, key
    for key in ("command", "config", "hardware", "wall_time_s"):
        assert key in card["training"], key
    assert (WEIGHTS_DIR / "mnist-vae.safetensors").stat().st_size < 25e6


def test_corrupted_weights_are_refused(tmp_path):
    shutil.copy(WEIGHTS_DIR / "mnist-vae.json", tmp_path / "m.json")
    data = bytearray((WEIGHTS_DIR / "mnist-vae.safetensors").read_bytes())
    data[-10] ^= 0xFF
    (tmp_path / "m.safetensors").write_bytes(bytes(data))
    with pytest.raises(VaekitError, match="sha256"):
        load_from_files(tmp_path / "m.safetensors", tmp_path / "m.json")


def test_a_kill_between_the_renames_of_weights_and_card_still_loads_the_new_pair(tmp_path, monkeypatch):
    import os

    import vaekit.pretrained as P

    m = vaekit.create_model("mlp-vae", image_shape=(1, 4, 4), hidden=(8,), latent_dim=2)
    P.save_model(m, tmp_path, {"note": "old"})
    with torch.no_grad():
        for p in m.parameters():
            p.add_(1.0)
    real, calls = os.replace, []

    def dies_second_time(a, b):
        calls.append(b)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the process is gone between the two renames
        real(a, b)

    monkeypatch.setattr(P.os, "replace", dies_second_time)
    with pytest.raises(KeyboardInterrupt):
        P.save_model(m, tmp_path, {"note": "new"})
    monkeypatch.setattr(P.os, "replace", real)
    back = load_from_files(tmp_path / "model.safetensors", tmp_path / "model.json")
    assert back.card["note"] == "new" and not (tmp_path / "model.json.new").exists()
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), m.state_dict().values()))


def test_tasks_load_a_shipped_model_once_and_anew_when_its_file_changes(tmp_path, monkeypatch):
    import os

    import vaekit.pretrained as P
    from vaekit.tasks.common import resolve_model

    for suffix in (".safetensors", ".json"):
        shutil.copy(WEIGHTS_DIR / f"mnist-vae{suffix}", tmp_path / f"mnist-vae{suffix}")
    monkeypatch.setattr(P, "WEIGHTS_DIR", tmp_path)
    first = resolve_model("mnist-vae")
    assert resolve_model("mnist-vae") is first and P.shared_model("mnist-vae") is first
    st = (tmp_path / "mnist-vae.safetensors").stat()
    os.utime(tmp_path / "mnist-vae.safetensors", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    again = resolve_model("mnist-vae")
    assert again is not first and resolve_model("mnist-vae") is again
    P.save_model(again, tmp_path / "run", {"name": "run"})  # a run folder may still be training: read each time
    assert resolve_model(tmp_path / "run") is not resolve_model(tmp_path / "run")


def test_int8_storage_quantizes_large_weights_by_kernel_and_loads_the_same_numbers_everywhere(tmp_path):
    """Large convolution weights are stored as int8 with an fp16 scale per kernel, the rest in fp16; loading
    widens them back within half a step of each kernel's largest value, and the file is much smaller."""
    import vaekit.pretrained as P

    torch.manual_seed(0)
    m = vaekit.create_model("denoise-vae", channels=1, widths=[16, 32, 128], latent_channels=2)
    big = P.int8_keys(m)
    assert big and all(m.state_dict()[k].numel() >= P.INT8_MIN_SIZE for k in big)
    first = m.state_dict()[sorted(big)[0]]
    with torch.no_grad():  # one kernel with an outlier: its own scale, its neighbours unharmed
        first[0, 0].mul_(100)
    P.save_model(m, tmp_path / "h", {"name": "t"}, dtype=torch.float16)
    path = P.save_model(m, tmp_path / "q", {"name": "t"}, dtype=torch.int8)
    assert path.stat().st_size < 0.7 * (tmp_path / "h" / "model.safetensors").stat().st_size
    back = load_from_files(path, tmp_path / "q" / "model.json")
    assert back.card["weights_dtype"] == "int8"
    for k, v in m.state_dict().items():
        got = back.state_dict()[k]
        if k in big:
            kernels = v.reshape(v.shape[0] * v.shape[1], -1)
            step = kernels.abs().amax(1, keepdim=True) / 127
            err = (got.reshape(kernels.shape) - kernels).abs()
            assert (err <= step * 0.51 + 1e-7).all() and not torch.equal(got, v), k
        elif v.is_floating_point():
            assert torch.equal(got, v.half().float()), k
    again = load_from_files(path, tmp_path / "q" / "model.json")
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), again.state_dict().values()))
    from safetensors.torch import load_file, save_file

    bad = load_file(str(path))
    key = sorted(big)[0] + P.SCALE_SUFFIX
    bad[key] = bad[key][:-1]  # one scale short
    save_file(bad, str(path))
    with pytest.raises(VaekitError, match="scales do not match"):
        load_from_files(path, tmp_path / "q" / "model.json", verify=False)


def test_generate_is_seeded_and_tempered(model):
    a = vaekit.generate(model, 8, seed=3)
    assert a.shape == (8, 1, 28, 28) and 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, vaekit.generate(model, 8, seed=3))
    assert not torch.equal(a, vaekit.generate(model, 8, seed=4))
    with pytest.raises(VaekitError):
        vaekit.generate(model, 8, temperature=0)


def test_generate_by_class_and_refusals():
    each = vaekit.generate("cvae-mnist", 10, seed=2)  # classes in turn: sample i is class i
    three = vaekit.generate("cvae-mnist", 10, seed=2, label=3)
    assert torch.allclose(each[3], three[3]) and not torch.allclose(each[5], three[5])
    for bad, words in (
        (dict(model="cvae-mnist", label=10), "0..9"),
        (dict(model="mnist-vae", label=1), "class-conditional"),
        (dict(model="mnist-vae", temperature=float("nan")), "positive"),
        (dict(model="compensate-posterior"), "VAE of whole images"),
    ):
        with pytest.raises(VaekitError, match=words):
            vaekit.generate(n=4, **bad)
    with pytest.raises(VaekitError, match="label"):
        vaekit.interpolate("cvae-mnist", each[0], each[1])
    frames = vaekit.interpolate("cvae-mnist", each[0], each[1], steps=3, label=0)
    assert frames.shape == (3, 1, 28, 28)


def test_eval_and_augment_take_a_class_conditional_vae_with_labels_and_refuse_other_models():
    from vaekit.samples import rendered_digits

    d = rendered_digits("3838")
    y = torch.tensor([3, 8, 3, 8])
    res = vaekit.evaluate("cvae-mnist", d, labels=y, k=5)
    wrong = vaekit.evaluate("cvae-mnist", d, labels=y.flip(0), k=5)  # the other digit's label explains them worse
    assert res["given_labels"] and res["elbo"] > wrong["elbo"]
    with pytest.raises(VaekitError, match="labels"):
        vaekit.evaluate("cvae-mnist", d, k=5)
    with pytest.raises(VaekitError, match="labels"):
        vaekit.augment(d, n=2, model="cvae-mnist")
    assert vaekit.augment(d, n=2, model="cvae-mnist", labels=y).shape == (4, 2, 1, 28, 28)
    for call in (lambda: vaekit.evaluate("compensate-posterior", d), lambda: vaekit.augment(d, model="denoise-gray")):
        with pytest.raises(VaekitError, match="VAE of whole images"):
            call()


def test_interpolation_ends_are_the_reconstructions(model):
    from vaekit.samples import rendered_digits

    d = rendered_digits("38")
    frames = vaekit.interpolate(model, d[0], d[1], steps=10)
    assert frames.shape == (10, 1, 28, 28)
    rec = model.reconstruct(d)
    assert torch.allclose(frames[0], rec[0], atol=1e-5) and torch.allclose(frames[-1], rec[1], atol=1e-5)


def test_shipped_model_explains_rendered_digits_better_than_noise(model):
    from vaekit.data import binarize
    from vaekit.samples import rendered_digits

    digits = binarize(rendered_digits(), 0)
    noise = binarize(torch.full_like(digits, 0.15), 0)
    res_d = vaekit.evaluate(model, digits, k=50)
    res_n = vaekit.evaluate(model, noise, k=50)
    assert res_d["nll"] < res_n["nll"] - 50
    assert res_d["nll"] <= -res_d["elbo"] + 1e-3  # the IWAE bound is at least as tight as the ELBO
    assert res_d["bits_per_dim"] == pytest.approx(res_d["nll"] / (784 * np.log(2)))


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "vaekit", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["generate", "no-such-model", "-o", "x.png"], "unknown model"),
        (["eval", "mnist-vae", "--data-dir", "/no/such/dir"], "does not exist"),
        (["train", "/no/such.yaml", "-o", "r"], "does not exist"),
        (["generate", "mnist-vae", "--interpolate", "a.png", "b.png", "-o", "p.png"], "does not exist"),
        (["generate", "mnist-vae", "--bogus"], "unrecognized"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, needle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = run_cli(*args)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vaekit: error:") and needle in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_non_image_and_oversized_inputs(tmp_path, capsys):
    (tmp_path / "a.png").write_text("hello")
    Image.fromarray(np.zeros((60, 60), np.uint8)).save(tmp_path / "b.png")
    assert (
        main(
            [
                "generate",
                "mnist-vae",
                "--interpolate",
                str(tmp_path / "a.png"),
                str(tmp_path / "b.png"),
                "-o",
                str(tmp_path / "p.png"),
            ]
        )
        == 2
    )
    assert "a.png" in capsys.readouterr().err
    assert (
        main(
            [
                "generate",
                "mnist-vae",
                "--interpolate",
                str(tmp_path / "b.png"),
                str(tmp_path / "b.png"),
                "--max-pixels",
                "1000",
                "-o",
                str(tmp_path / "p.png"),
            ]
        )
        == 2
    )
    assert "megapixels" in capsys.readouterr().err
    assert not (tmp_path / "p.png").exists()


def test_every_command_has_help():
    for cmd in (
        ["models"],
        ["train"],
        ["eval"],
        ["generate"],
        ["bench"],
        ["bench", "generate"],
        ["demo"],
        ["compress"],
        ["decompress"],
        ["bench", "compress"],
    ):
        r = run_cli(*cmd, "--help")
        assert r.returncode == 0 and "usage" in r.stdout


def test_cli_generate_interpolate_models_and_demo(tmp_path, capsys):
    assert main(["generate", "mnist-vae", "-n", "16", "--seed", "1", "-o", str(tmp_path / "s.png")]) == 0
    assert Image.open(tmp_path / "s.png").size == (4 * 30 + 2, 4 * 30 + 2)
    from vaekit.io import write_image
    from vaekit.samples import rendered_digits

    d = rendered_digits("17")
    write_image(tmp_path / "a.png", d[0])
    write_image(tmp_path / "b.png", d[1])
    assert (
        main(
            [
                "generate",
                "mnist-vae",
                "--interpolate",
                str(tmp_path / "a.png"),
                str(tmp_path / "b.png"),
                "--steps",
                "10",
                "-o",
                str(tmp_path / "p.png"),
            ]
        )
        == 0
    )
    assert Image.open(tmp_path / "p.png").size == (10 * 30 + 2, 32)
    assert main(["generate", "cvae-mnist", "-n", "20", "-o", str(tmp_path / "c.png")]) == 0
    assert Image.open(tmp_path / "c.png").size == (10 * 30 + 2, 2 * 30 + 2)  # a row per turn of the classes
    capsys.readouterr()
    assert main(["generate", "denoise-gray", "-o", str(tmp_path / "d.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "VAE of whole images" in err and not (tmp_path / "d.png").exists()
    assert main(["models"]) == 0
    listing = capsys.readouterr().out
    assert "mnist-vae" in listing and "codec-hyperprior" in listing
    lines = {line.split()[0]: line for line in listing.splitlines()}
    assert "kodak_bd_rate_vs_webp_pct" in lines["codec-hyperprior"] and "val_elbo" not in lines["codec-hyperprior"]
    assert "cbsd68_sigma25_clipped_minus_bm3d_db" in lines["denoise-color"]
    assert main(["demo", "-o", str(tmp_path / "demo")]) == 0
    page = (tmp_path / "demo" / "index.html").read_text()
    for f in (
        "samples.png",
        "reconstructions.png",
        "interpolation.png",
        "compress_vkc_q4.png",
        "compress_jpeg_q4.png",
        "augment_variants.png",
        "compensate_degraded.png",
        "compensate_gray-world.png",
        "denoise_gray_noisy.png",
        "denoise_gray_vae.png",
        "inpaint_scratches_vae.png",
        "inpaint_box_vae.png",
        "inpaint_box_sample0.png",
    ):
        assert f in page and (tmp_path / "demo" / f).is_file()


def test_local_models_dir_and_run_folder(tiny_mnist, tmp_path, capsys):
    from conftest import tiny_config

    from vaekit.training.loop import train

    train(tiny_config(tiny_mnist, max_steps=20), tmp_path / "models" / "mine", quiet=True)
    assert main(["models", "--models-dir", str(tmp_path / "models")]) == 0
    assert "mine" in capsys.readouterr().out
    assert (
        main(
            [
                "eval",
                str(tmp_path / "models" / "mine"),
                "--data-dir",
                str(tiny_mnist),
                "-k",
                "5",
                "--quiet",
                "-o",
                str(tmp_path / "e.json"),
            ]
        )
        == 0
    )
    res = read_results(tmp_path / "e.json")
    assert res["n"] == 100 and res["nll"] > 0


@pytest.mark.skipif(not MNIST_DIR.is_dir(), reason="../shared/data/mnist not present")
def test_bench_generate_small(tmp_path):
    assert (
        main(
            [
                "bench",
                "generate",
                "--data-dir",
                str(MNIST_DIR),
                "--limit",
                "50",
                "-k",
                "20",
                "--throughput-steps",
                "20",
                "-o",
                str(tmp_path),
                "--quiet",
            ]
        )
        == 0
    )
    res = read_results(tmp_path / "generate-mnist.json")
    assert res["metrics"]["n"] == 50 and len(res["per_image_nll"]) == 50
    assert res["command"].startswith(f"vaekit bench generate --data-dir {MNIST_DIR}")
    assert res["provenance"]["weights_sha256"] and res["throughput"]["ratio"] > 0
    assert (tmp_path / "generate-mnist.md").read_text().startswith("| model")
    assert (tmp_path / "generate-mnist.png").is_file()


def test_bad_output_paths_and_threads_are_one_line_and_exit_2(tmp_path, capsys):
    from PIL import Image

    from vaekit.cli import main

    Image.fromarray(np.zeros((32, 40, 3), np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "file").write_text("x")
    cases = [
        ["denoise", str(tmp_path / "a.png"), "-o", str(tmp_path / "file" / "b.png"), "--sigma", "10"],
        ["compress", str(tmp_path / "a.png"), "-o", str(tmp_path / "file" / "b.vkc")],
        ["denoise", str(tmp_path / "a.png"), "-o", str(tmp_path / "c.png"), "--sigma", "10", "--threads", "0"],
    ]
    for argv in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("vaekit: error:") and len(err.splitlines()) == 1 and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "file"]  # nothing written


def test_a_reader_that_stops_early_ends_the_output_quietly(monkeypatch, capsys):
    """`vaekit models --json | head` printed "vaekit: error: cannot write: Broken pipe"."""
    import os

    r, w = os.pipe()
    os.close(r)  # the reader has gone
    monkeypatch.setattr(sys, "stdout", os.fdopen(w, "w"))
    assert main(["models", "--json"]) == 141
    assert capsys.readouterr().err == ""
    sys.stdout.close()
