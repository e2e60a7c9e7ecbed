import json

import pytest
import torch
from conftest import tiny_config
from safetensors.torch import load_file

from vaekit.errors import VaekitError
from vaekit.training.config import TrainConfig
from vaekit.training.loop import ema_update, train


def test_config_yaml_overrides_and_unknown_keys(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model: mlp-vae\nmodel_args:\n  latent_dim: 8\nepochs: 3\n")
    cfg = TrainConfig.load(p, ["epochs=5", "model_args.hidden=[64, 32]", "lr=3e-4"])
    assert cfg.epochs == 5 and cfg.model_args == {"latent_dim": 8, "hidden": [64, 32]} and cfg.lr == 3e-4
    p.write_text("modle: mlp-vae\n")
    with pytest.raises(VaekitError, match="unknown key 'modle'"):
        TrainConfig.load(p)
    with pytest.raises(VaekitError, match="unknown config key"):
        TrainConfig.load(None, ["nope=1"])
    with pytest.raises(VaekitError, match="key=value"):
        TrainConfig.load(None, ["epochs"])


def test_training_learns_and_writes_everything(tiny_mnist, tmp_path):
    out = tmp_path / "run"
    summary = train(tiny_config(tiny_mnist, max_steps=60), out, quiet=True)
    assert summary["steps"] == 60 and summary["img_per_s"] > 0
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert log[-1]["val_elbo"] > log[0]["val_elbo"]  # it learns
    card = json.loads((out / "model.json").read_text())
    assert card["arch"] == "mlp-vae" and card["training"]["config"]["max_steps"] == 60
    ck = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ck["step"] == 60 and ck["config"]["seed"] == 3
    assert not list(out.glob("*.tmp"))


def test_killed_and_resumed_run_ends_with_identical_weights(tiny_mnist, tmp_path):
    cfg = tiny_config(tiny_mnist, max_steps=40, ckpt_every=10)
    train(cfg, tmp_path / "straight", quiet=True)
    # "kill" after step 27: the last checkpoint is step 20, so steps 21-27 are redone on resume
    train(cfg, tmp_path / "resumed", quiet=True, stop_after=27)
    assert torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)["step"] == 20
    train(None, tmp_path / "resumed", resume=True, quiet=True)
    a = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps = lambda run: [json.loads(x)["step"] for x in (tmp_path / run / "log.jsonl").read_text().splitlines()]  # noqa: E731
    assert steps("resumed") == steps("straight") == [10, 20, 30, 40]
    wa = load_file(str(tmp_path / "straight" / "model.safetensors"))
    wb = load_file(str(tmp_path / "resumed" / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_weight_average_is_what_validates_saves_and_resumes(tiny_mnist, tmp_path):
    cfg = tiny_config(tiny_mnist, max_steps=40, ckpt_every=10, eval_every=40, ema=0.9)
    train(cfg, tmp_path / "straight", quiet=True)
    ck = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=True)
    avg = {k.removeprefix("module."): v for k, v in ck["ema"].items() if k.startswith("module.")}
    assert int(ck["ema"]["n_averaged"]) == 40 and avg.keys() == ck["model"].keys()
    assert not all(torch.equal(avg[k], ck["model"][k]) for k in avg)  # the average lags the live weights
    saved = load_file(str(tmp_path / "straight" / "model.safetensors"))  # validated once, at step 40
    assert all(torch.equal(saved[k], avg[k]) for k in saved)
    train(cfg, tmp_path / "resumed", quiet=True, stop_after=27)
    train(None, tmp_path / "resumed", resume=True, quiet=True)
    again = load_file(str(tmp_path / "resumed" / "model.safetensors"))
    assert all(torch.equal(saved[k], again[k]) for k in saved)
    with pytest.raises(VaekitError, match="ema must be"):
        tiny_config(tiny_mnist, ema=1.0)
    a = [torch.zeros(2)]
    ema_update(0.999)(a, [torch.ones(2)], 0)  # the first updates move far: decay 1/10, not 0.999
    assert torch.allclose(a[0], torch.full((2,), 0.9))
    ema_update(0.5)(a, [torch.zeros(2)], 10**6)  # later, the given decay
    assert torch.allclose(a[0], torch.full((2,), 0.45))


def test_resume_refuses_other_architecture(tiny_mnist, tmp_path):
    train(tiny_config(tiny_mnist, max_steps=10), tmp_path / "r", quiet=True)
    other = tiny_config(tiny_mnist, model="hvae", model_args={"hidden1": [8], "hidden2": [8], "latent_dims": [2, 2]})
    with pytest.raises(VaekitError, match="cannot resume"):
        train(other, tmp_path / "r", resume=True, quiet=True)
    s = train(None, tmp_path / "r", resume=True, quiet=True, overrides=["max_steps=15"])
    assert s["steps"] == 15
    with pytest.raises(VaekitError, match="nothing to resume"):
        train(None, tmp_path / "empty", resume=True, quiet=True)


def test_missing_data_dir_writes_nothing(tmp_path):
    with pytest.raises(VaekitError, match="does not exist"):
        train(tiny_config(tmp_path / "nope"), tmp_path / "run", quiet=True)
    assert not (tmp_path / "run").exists()


def test_folder_patches_with_conv_vae(tmp_path):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    cfg = TrainConfig.from_dict(
        dict(
            model="conv-vae",
            data="folder",
            data_dir=str(tmp_path),
            patch_size=16,
            patches_per_image=4,
            batch_size=4,
            max_steps=6,
            eval_every=3,
            ckpt_every=3,
            model_args={
                "in_channels": 3,
                "channels": [8, 8],
                "latent_channels": 2,
                "image_size": 16,
                "likelihood": "logistic",
            },
        )
    )
    s = train(cfg, tmp_path / "run", quiet=True)
    assert s["steps"] == 6 and (tmp_path / "run" / "model.safetensors").is_file()
    cfg.split_file = "SPLITS.tsv"  # a recipe's split file that the user's folder lacks: the way out is named
    with pytest.raises(VaekitError, match="split_file=null"):
        train(cfg, tmp_path / "run2", quiet=True)
    assert not (tmp_path / "run2").exists()


def test_tensorboard_missing_is_a_clear_error(tiny_mnist, tmp_path):
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(VaekitError, match="tensorboard"):
            train(tiny_config(tiny_mnist, tensorboard=True), tmp_path / "r", quiet=True)
        assert not (tmp_path / "r").exists()
    else:
        train(tiny_config(tiny_mnist, tensorboard=True, max_steps=5), tmp_path / "r", quiet=True)
        assert list((tmp_path / "r" / "tb").iterdir())


def test_api_train_is_the_function(tiny_mnist, tmp_path):
    import vaekit
    import vaekit.training.config  # noqa: F401  (importing the subpackage must not shadow vaekit.train)

    assert callable(vaekit.train)
    summary = vaekit.train(tiny_config(tiny_mnist, max_steps=3), tmp_path / "r", quiet=True)
    assert summary["steps"] == 3


def test_conditional_vae_trains_on_labels(tiny_mnist, tmp_path):
    from vaekit.pretrained import load_model

    cfg = tiny_config(
        tiny_mnist, model="cvae", max_steps=30, model_args={"num_classes": 10, "hidden": [32], "latent_dim": 4}
    )
    summary = train(cfg, tmp_path / "c", quiet=True)
    assert summary["steps"] == 30
    m = load_model(tmp_path / "c")
    assert m.sample_class([0, 3, 9]).shape == (3, 1, 28, 28)


def test_init_from_starts_a_run_from_other_weights(tiny_mnist, tmp_path):
    train(tiny_config(tiny_mnist, max_steps=10), tmp_path / "a", quiet=True)
    src = load_file(str(tmp_path / "a" / "model.safetensors"))
    cfg = tiny_config(tiny_mnist, max_steps=1, lr=1e-12, init_from=str(tmp_path / "a" / "model.safetensors"))
    train(cfg, tmp_path / "b", quiet=True)
    got = load_file(str(tmp_path / "b" / "model.safetensors"))
    assert all(torch.allclose(got[k], src[k], atol=1e-6) for k in src)  # one step at lr 1e-12 moves nothing
    first = sorted(src)[0]
    cfg = tiny_config(
        tiny_mnist, max_steps=1, lr=1e-12, init_from=str(tmp_path / "a" / "model.safetensors"), init_exclude=[first]
    )
    train(cfg, tmp_path / "e", quiet=True)
    got = load_file(str(tmp_path / "e" / "model.safetensors"))
    assert not torch.allclose(got[first], src[first]) and all(
        torch.allclose(got[k], src[k], atol=1e-6) for k in src if k != first
    )
    bad = tiny_config(tiny_mnist, max_steps=1, init_from=str(tmp_path / "nope.safetensors"))
    with pytest.raises(VaekitError, match="neither a shipped model"):
        train(bad, tmp_path / "c", quiet=True)
    other = tiny_config(
        tiny_mnist,
        max_steps=1,
        model="hvae",
        model_args={"hidden1": [8], "hidden2": [8], "latent_dims": [2, 2]},
        init_from=str(tmp_path / "a" / "model.safetensors"),
    )
    with pytest.raises(VaekitError, match="tensors match"):
        train(other, tmp_path / "d", quiet=True)


def test_every_shipped_recipe_loads_and_builds_its_model():
    from pathlib import Path

    from vaekit.registry import create_model

    paths = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))
    assert len(paths) >= 8
    for p in paths:
        cfg = TrainConfig.load(p)
        model = create_model(cfg.model, **cfg.model_args)
        assert sum(t.numel() for t in model.parameters()) > 0, p.name


def test_trainable_prefixes_train_only_those_tensors(tmp_path):
    """``trainable``: a fine-tune moves only the named tensors (here the inpainter's detail path); an unknown
    prefix is refused."""
    import numpy as np
    from PIL import Image
    from safetensors.torch import load_file

    from vaekit.pretrained import save_model
    from vaekit.registry import create_model
    from vaekit.training.config import TrainConfig
    from vaekit.training.loop import train

    torch.manual_seed(0)
    from conftest import INPAINT_PLAIN

    args = {
        **INPAINT_PLAIN,
        "mask_probs": list(INPAINT_PLAIN["mask_probs"]),
        "channels": 3,
        "widths": [8, 8, 16],
        "latent_channels": 2,
        "detail": [8, 3, 4],
    }
    start = create_model("inpaint-vae", **args)
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    save_model(start, tmp_path / "start", {"arch": "inpaint-vae"})
    cfg = TrainConfig.from_dict(
        dict(
            model="inpaint-vae",
            model_args=args,
            data="folder",
            data_dir=str(tmp_path),
            patch_size=16,
            patches_per_image=4,
            batch_size=4,
            max_steps=3,
            eval_every=3,
            ckpt_every=3,
            lr=1e-2,
            trainable=["detail."],
            init_from=str(tmp_path / "start" / "model.safetensors"),
        )
    )
    train(cfg, tmp_path / "run", quiet=True)
    a = load_file(str(tmp_path / "start" / "model.safetensors"))
    b = load_file(str(tmp_path / "run" / "model.safetensors"))
    moved = {k for k in a if not torch.equal(a[k], b[k])}
    assert moved and all(k.startswith("detail.") for k in moved)
    bad = TrainConfig.from_dict(dict(cfg.to_dict(), trainable=["nothing."]))
    with pytest.raises(VaekitError, match="trainable"):
        train(bad, tmp_path / "bad", quiet=True)


def test_time_budget_stops_with_a_checkpoint_and_weights_and_bf16_autocast_trains(tiny_mnist, tmp_path):
    """A wall-time budget ends the run early with a resumable checkpoint and the best weights (what a lent GPU's
    fixed minutes need); ``amp: bf16`` trains under bfloat16 autocast with finite losses."""
    cfg = tiny_config(tiny_mnist, max_steps=100000, time_budget_s=0.5, amp="bf16")
    r = train(cfg, tmp_path / "run", quiet=True)
    assert 0 < r["steps"] < 100000
    ck = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert ck["step"] == r["steps"] and (tmp_path / "run" / "model.safetensors").is_file()
    assert all(torch.isfinite(v).all() for v in load_file(str(tmp_path / "run" / "model.safetensors")).values())
    with pytest.raises(VaekitError, match="amp"):
        TrainConfig.from_dict(dict(cfg.to_dict(), amp="fp8"))


def test_init_from_widens_int8_stored_weights(tmp_path):
    """A run started from an int8-stored file gets the widened weights, not the raw integers."""
    from vaekit.pretrained import int8_keys, read_weights, save_model
    from vaekit.registry import create_model
    from vaekit.training.loop import init_weights

    torch.manual_seed(0)
    args = dict(channels=1, widths=[16, 32, 128], latent_channels=2)
    src = create_model("denoise-vae", **args)
    path = save_model(src, tmp_path, {"name": "t"}, dtype=torch.int8)
    big = sorted(int8_keys(src))
    assert big and load_file(str(path))[big[0]].dtype == torch.int8
    dst = create_model("denoise-vae", **args)
    init_weights(dst, str(path))
    stored = read_weights(path)
    assert set(stored) == set(dst.state_dict())
    for k, v in dst.state_dict().items():
        assert torch.equal(v, stored[k].to(v.dtype)), k
    w, got = src.state_dict()[big[0]], dst.state_dict()[big[0]]
    assert (got - w).abs().max() <= w.abs().max() / 254 + 1e-6  # scaled back, within half an int8 step


def test_a_shipped_models_name_fine_tunes_it_with_the_recipe_its_card_records(tmp_path, capsys):
    """`vaekit train denoise-gray --data-dir mine -o run`: the user's folder, the shipped weights as the start."""
    import numpy as np
    from PIL import Image

    from vaekit.cli import main
    from vaekit.pretrained import load_pretrained

    rng = np.random.default_rng(0)
    data = tmp_path / "mine"
    data.mkdir()
    for i in range(4):
        yy, xx = np.mgrid[:48, :56]
        img = 128 + 60 * np.sin(xx / (3 + i) + yy / 7) + rng.normal(0, 5, (48, 56))
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(data / f"{i}.png")
    cfg = TrainConfig.load("denoise-gray", ["max_steps=7"])
    assert cfg.init_from == "denoise-gray" and cfg.split_file is None and cfg.data_dir is None
    assert cfg.model == "denoise-vae" and cfg.max_steps == 7  # the card's recipe, the overrides over it
    small = ["patch_size=32", "batch_size=2", "patches_per_image=2", "val_patches_per_image=1", "downscale=1"]
    argv = ["train", "denoise-gray", "--data-dir", str(data), "-o", str(tmp_path / "run"), "max_steps=1", *small]
    assert main(argv) == 0
    assert "fine-tuning denoise-gray from its shipped weights" in capsys.readouterr().out
    tuned = load_file(str(tmp_path / "run" / "model.safetensors"))
    shipped = load_pretrained("denoise-gray").state_dict()
    moved = max((tuned[k].float() - shipped[k].float()).abs().max().item() for k in tuned if k in shipped)
    assert moved < 0.02  # one small step away from the shipped weights, not a fresh start
    assert main(["train", "no-such-model", "--data-dir", str(data), "-o", str(tmp_path / "x")]) == 2
    assert "or name a shipped model" in capsys.readouterr().err
