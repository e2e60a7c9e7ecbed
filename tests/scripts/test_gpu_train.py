"""scripts/gpu_train.py end to end on the CPU with a tiny budget: stage, train side by side, fetch."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_train.py"
TINY = [
    "model_args.widths=[8,8,16]",
    "model_args.latent_channels=2",
    "batch_size=4",
    "patch_size=32",
    "patches_per_image=4",
]


def run(*args, cwd):
    r = subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def test_stage_train_and_fetch_on_cpu(tmp_path):
    from vaekit.pretrained import load_model, save_model
    from vaekit.registry import create_model

    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    rows = ["file\tsplit"]
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (560, 600, 3), dtype=np.uint8)).save(photos / f"p{i}.png")
        rows.append(f"p{i}.png\t{'val' if i == 3 else 'train'}")
    (photos / "SPLITS.tsv").write_text("\n".join(rows) + "\n")
    torch.manual_seed(0)
    start = create_model("denoise-vae-opponent", widths=[8, 8, 16], latent_channels=2)
    save_model(start, tmp_path / "cpu-run", {"name": "tiny"})
    stage = tmp_path / "stage"
    out = run(
        "--stage",
        str(stage),
        "stage",
        "--photos",
        str(photos),
        "--crops",
        "6",
        "--no-wheels",
        "--start",
        f"denoise-color={tmp_path / 'cpu-run'}",
        cwd=tmp_path,
    )
    assert "staged 6 crops" in out and (stage / "start" / "denoise-color" / "model.safetensors").is_file()
    assert all(Image.open(f).size == (256, 256) for f in (stage / "photos").glob("*.png"))
    run(
        "--stage",
        str(stage),
        "train",
        "--minutes",
        "0.05",
        "--out",
        str(tmp_path / "OUT"),
        "--device",
        "cpu",
        "--jobs",
        "denoise-color",
        *[a for kv in TINY for a in ("--set", kv)],
        cwd=tmp_path,
    )
    summary = json.loads((tmp_path / "OUT" / "summary.json").read_text())
    assert summary["denoise-color"]["returncode"] == 0 and summary["denoise-color"]["steps"] > 0
    assert sorted(p.name for p in (tmp_path / "OUT").iterdir()) == ["denoise-color", "summary.json"]
    back = tmp_path / "OUT" / "denoise-color"
    assert max(p.stat().st_size for p in back.iterdir()) < 16 * 2**20  # what a device call can bring back
    run("fetch", str(tmp_path / "OUT"), "--runs", str(tmp_path / "runs"), cwd=tmp_path)
    m = load_model(tmp_path / "runs" / "denoise-color-gpu")
    assert m.arch == "denoise-vae-opponent" and m.card["training"]["config"]["init_from"].endswith("model.safetensors")
