import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

HERE = Path(__file__).parent


def _torchrun(args, tmp_path, timeout=120):
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.mark.slow
def test_ddp_gradients_are_averaged(tmp_path):
    _torchrun([str(HERE / "ddp_grad_check.py"), str(tmp_path / "v.json")], tmp_path)
    v = json.loads((tmp_path / "v.json").read_text())
    assert v["ranks_differ"], "the two ranks must see different data for the check to mean anything"
    assert v["averaged"], v


@pytest.mark.slow
def test_torchrun_vaekit_train_and_resume(tiny_mnist, tmp_path):
    from conftest import tiny_config

    cfg = tiny_config(tiny_mnist, max_steps=12, ckpt_every=6, eval_every=6, batch_size=40)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    _torchrun(["-m", "vaekit", "train", "c.yaml", "-o", "run", "--quiet", "--device", "cpu"], tmp_path)
    ck = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert ck["step"] == 12 and len(ck["rng"]) == 2  # both ranks' RNG states saved
    assert (tmp_path / "run" / "model.safetensors").is_file()
    assert not list((tmp_path / "run").glob("*.tmp"))
    _torchrun(["-m", "vaekit", "train", "--resume", "run", "max_steps=18", "--quiet", "--device", "cpu"], tmp_path)
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["step"] == 18
