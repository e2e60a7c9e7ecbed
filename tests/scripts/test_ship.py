"""scripts/ship.py: the shipped cards carry the figures that results/ holds for their very weights."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_ship():
    spec = importlib.util.spec_from_file_location("ship", ROOT / "scripts" / "ship.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("name", ["denoise-color", "denoise-gray", "inpaint-color", "codec-hyperprior"])
def test_shipped_cards_carry_the_figures_of_results_for_their_weights(name):
    ship = load_ship()
    figs = ship.card_figures(name, ROOT)
    card = json.loads((ROOT / "src" / "vaekit" / "weights" / f"{name}.json").read_text())["metrics"]
    assert figs["benchmark_results"], "no results file measured these weights"
    for k, v in figs.items():
        assert card.get(k) == v, f"{name}: card {k} = {card.get(k)!r}, results say {v!r}"
    stale = set(ship.figure_keys(name, card)) - set(figs)
    assert not stale, f"{name}: the card keeps figures no results file holds for its weights: {sorted(stale)}"


def test_figures_of_other_weights_are_left_out(tmp_path):
    ship = load_ship()
    (tmp_path / "src" / "vaekit" / "weights").mkdir(parents=True)
    (tmp_path / "results").mkdir()
    card = {"sha256": "a" * 64, "metrics": {}}
    (tmp_path / "src" / "vaekit" / "weights" / "codec-hyperprior.json").write_text(json.dumps(card))
    bd = {"vaekit": {"vs_jpeg": -30.0, "vs_webp": 2.5}}
    for s, sha in (("kodak", "a" * 64), ("photos-val", "b" * 64)):
        r = {"command": "c", "provenance": {"weights_sha256": sha}, "bd_rate": bd}
        (tmp_path / "results" / f"compress-{s}.json").write_text(json.dumps(r))
    figs = ship.card_figures("codec-hyperprior", tmp_path)
    assert figs == {
        "kodak_bd_rate_vs_jpeg_pct": -30.0,
        "kodak_bd_rate_vs_webp_pct": 2.5,
        "benchmark_results": {"kodak": "results/compress-kodak.json"},
    }
