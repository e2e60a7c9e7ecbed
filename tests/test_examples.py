"""Every example runs in its tiny configuration and prints its figures."""

import importlib.util
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize(
    "name",
    ["a_conv_vae_restoration", "b_mlp_vae_dropout", "c_repair_pipeline", "d_patch_codec", "e_latent_noise_enhancement"],
)
def test_example_tiny(name, tmp_path, capsys):
    figures = load(name).main(["--tiny", "-o", str(tmp_path), "--threads", "1"])
    assert figures
    assert list(tmp_path.glob("*.png"))
    assert capsys.readouterr().out.strip()
