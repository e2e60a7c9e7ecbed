"""Folder runs at scale: shards cover a folder exactly once, torchrun and one process write the same bytes,
a killed run resumes, and bad inputs are logged and skipped."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from vaekit import batch
from vaekit.batch import FAILED_EXIT, balance, parse_shard, read_manifest
from vaekit.cli import main
from vaekit.errors import VaekitError


def _folder(root, n=16, size=40):
    """``n`` small photos-like images, half in a subfolder, of varied sizes."""
    rng = np.random.default_rng(0)
    for i in range(n):
        h = size + 8 * (i % 5)
        base = np.linspace(0, 255, h * size * 3).reshape(h, size, 3)
        img = np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
        where = root / ("sub" if i % 2 else "") / f"im{i:02d}.png"
        where.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(where)
    return root


def _pngs(out):
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*.png"))}


def test_balance_puts_every_input_in_exactly_one_shard_and_spreads_the_bytes():
    rng = np.random.default_rng(1)
    sizes = [int(s) for s in rng.integers(1, 1000, 57)]
    for n in (1, 2, 3, 7, 60):
        shards = balance(sizes, n)
        assert sorted(i for s in shards for i in s) == list(range(len(sizes)))
        assert shards == balance(sizes, n)  # deterministic
        loads = [sum(sizes[i] for i in s) for s in shards]
        assert max(loads) - min(loads) <= max(sizes)
    big = balance([100, 1, 1, 1, 1, 100], 2)  # the two big files go to different shards
    assert {0, 5} & set(big[0]) and {0, 5} & set(big[1])


def test_shard_option_and_torchrun_environment(monkeypatch):
    assert parse_shard("3/100") == (3, 100)
    for bad in ("3", "2/2", "-1/4", "a/b", "1/0"):
        with pytest.raises(VaekitError, match="k/N"):
            parse_shard(bad)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert parse_shard(None) == (1, 4)


def test_two_shards_cover_the_folder_and_write_what_one_process_writes(tmp_path):
    src = _folder(tmp_path / "in", n=8)
    args = ["denoise", str(src), "--sigma", "25", "--quiet", "--threads", "1"]
    assert main(args + ["-o", str(tmp_path / "one")]) == 0
    for k in (0, 1):
        assert main(args + ["-o", str(tmp_path / "two"), "--shard", f"{k}/2"]) == 0
    assert _pngs(tmp_path / "two") == _pngs(tmp_path / "one")
    rows = read_manifest(tmp_path / "two")
    assert sorted(rows) == sorted(p.relative_to(src).as_posix() for p in src.rglob("*.png"))
    assert {r["shard"] for r in rows.values()} == {"0/2", "1/2"}
    assert all(r["status"] == "done" and r["files"][0]["sha256"] for r in rows.values())


def test_torchrun_two_processes_match_one_process_byte_for_byte(tmp_path):
    src = _folder(tmp_path / "in")
    assert main(["denoise", str(src), "-o", str(tmp_path / "one"), "--sigma", "25", "--quiet"]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += ["-m", "vaekit", "denoise", str(src), "-o", str(tmp_path / "two"), "--sigma", "25", "--quiet"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "16 inputs" in r.stdout and "2 processes" in r.stdout and "16 done, 0 failed" in r.stdout
    assert _pngs(tmp_path / "two") == _pngs(tmp_path / "one") and len(_pngs(tmp_path / "one")) == 16
    lines = (tmp_path / "two" / "manifest.jsonl").read_text().splitlines()
    assert len(lines) == 16 and len(read_manifest(tmp_path / "two")) == 16
    assert {r["shard"] for r in read_manifest(tmp_path / "two").values()} == {"0/2", "1/2"}


def test_a_rerun_skips_what_is_done_and_redoes_what_changed(tmp_path, capsys):
    src = _folder(tmp_path / "in", n=6)
    out = tmp_path / "out"
    args = ["compensate", str(src), "-o", str(out), "--method", "gray-world", "--quiet"]
    assert main(args) == 0
    before = _pngs(out)
    (out / "sub" / "im01.png").write_bytes(b"damaged")  # an output changed after the run: its hash no longer fits
    (out / "im02.png").unlink()
    capsys.readouterr()
    assert main(args) == 0
    said = capsys.readouterr().out
    assert "2 of 6 inputs" in said and "4 already done" in said
    assert _pngs(out) == before
    assert len((out / "manifest.jsonl").read_text().splitlines()) == 8
    assert main(args + ["--overwrite"]) == 0
    assert len((out / "manifest.jsonl").read_text().splitlines()) == 14 and _pngs(out) == before


def test_a_rerun_with_other_settings_redoes_what_the_old_ones_made(tmp_path, capsys):
    src = _folder(tmp_path / "in", n=4)
    out = tmp_path / "out"
    args = ["enhance", str(src), "-o", str(out), "--quiet"]
    assert main(args + ["--ops", "contrast=1.5"]) == 0
    first = _pngs(out)
    assert {r["settings"]["ops"][0] for r in read_manifest(out).values()} == {"contrast=1.5"}
    capsys.readouterr()
    assert main(args + ["--ops", "contrast=0.5"]) == 0  # other settings: every output is made again
    said = capsys.readouterr().out
    assert "4 of 4 inputs" in said and "4 redone with the new settings" in said
    second = _pngs(out)
    assert second.keys() == first.keys() and all(second[k] != first[k] for k in first)
    assert main(["enhance", str(src / "im00.png"), "-o", str(tmp_path / "one.png"), "--ops", "contrast=0.5"]) == 0
    assert (tmp_path / "one.png").read_bytes() == second["im00.png"]
    assert main(args + ["--ops", "contrast=0.5"]) == 0  # the same settings again: nothing to do
    assert "4 already done" in capsys.readouterr().out and _pngs(out) == second
    assert batch.summarize(out)["settings"] == [{"settings": {"ops": ["contrast=0.5"]}, "inputs": 4}]
    (src / "im00.png").unlink()  # a shard of the folder made with other settings: the manifest says so
    assert main(args + ["--ops", "contrast=1.5"]) == 0 and main(["manifest", str(out)]) == 0
    said = capsys.readouterr().out
    assert "3 done with ops=['contrast=1.5']" in said and "1 done with ops=['contrast=0.5']" in said


def test_a_rerun_redoes_inputs_and_masks_that_changed_since(tmp_path, capsys):
    src = _folder(tmp_path / "in", n=4)
    masks = tmp_path / "masks"
    for p in src.rglob("*.png"):
        m = np.zeros(np.asarray(Image.open(p)).shape[:2], np.uint8)
        m[5:15, 5:15] = 255
        where = masks / p.relative_to(src)
        where.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(m).save(where)
    out = tmp_path / "out"
    args = ["inpaint", str(src), "-o", str(out), "--mask-dir", str(masks), "--method", "telea", "--quiet"]
    assert main(args) == 0
    first = _pngs(out)
    img = np.asarray(Image.open(src / "im00.png")).copy()
    img[:20] = 0
    Image.fromarray(img).save(src / "im00.png")  # the input replaced under the same name
    m = np.zeros(np.asarray(Image.open(src / "sub" / "im01.png")).shape[:2], np.uint8)
    m[20:30, 10:30] = 255
    Image.fromarray(m).save(masks / "sub" / "im01.png")  # and another input's mask
    capsys.readouterr()
    assert main(args) == 0
    said = capsys.readouterr().out
    assert "2 of 4 inputs" in said and "2 already done" in said and "2 redone as their files changed" in said
    second = _pngs(out)
    assert [k for k in first if second[k] != first[k]] == ["im00.png", "sub/im01.png"]
    rows = read_manifest(out)
    assert [s["path"] for s in rows["sub/im01.png"]["sources"]] == [
        str(src / "sub/im01.png"),
        str(masks / "sub/im01.png"),
    ]
    assert main(args) == 0 and "4 already done" in capsys.readouterr().out
    src.rename(tmp_path / "moved")  # a moved folder holds the same inputs
    assert main([args[0], str(tmp_path / "moved"), *args[2:]]) == 0 and "4 already done" in capsys.readouterr().out


def test_a_bad_input_is_logged_and_skipped_with_its_exit_code(tmp_path, capsys):
    src = _folder(tmp_path / "in", n=4)
    (src / "sub" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = tmp_path / "out"
    assert main(["denoise", str(src), "-o", str(out), "--sigma", "25", "--quiet"]) == FAILED_EXIT
    err = capsys.readouterr().err
    assert "broken.png" in err and "Traceback" not in err
    rows = read_manifest(out)
    assert rows["sub/broken.png"]["status"] == "failed" and rows["sub/broken.png"]["error"]
    assert sum(r["status"] == "done" for r in rows.values()) == 4
    assert not (out / "sub" / "broken.png").exists()
    assert main(["manifest", str(out)]) == 0
    assert "4 done, 1 failed" in capsys.readouterr().out
    assert main(["manifest", str(out / "manifest.jsonl")]) == 0  # the manifest file itself names its run
    assert "4 done, 1 failed" in capsys.readouterr().out
    assert main(["manifest", str(src)]) == 2


def test_kill_9_leaves_no_partial_output_and_the_rerun_finishes_only_the_rest(tmp_path):
    src = _folder(tmp_path / "in", n=12, size=160)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "vaekit", "denoise", str(src), "-o", str(out), "--sigma", "25", "--quiet"]
    cmd += ["--threads", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    manifest = out / "manifest.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not manifest.is_file() or len(manifest.read_text().splitlines()) < 3):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = read_manifest(out)
    assert 3 <= len(done) < 12, "the run should be killed mid-way"
    for p in out.rglob("*.png"):  # what carries a final name is whole
        Image.open(p).load()
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{12 - len(done)} of 12 inputs" in rerun.stdout and f"{len(done)} already done" in rerun.stdout
    assert len(read_manifest(out)) == 12 and len(list(out.rglob("*.png"))) == 12
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path):
    from vaekit.io import host_tag

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    stale = tmp_path / f".a.png.{host_tag()}-{pid}.0123abcd.tmp"
    alive = tmp_path / f".b.png.{host_tag()}-{os.getpid()}.0123abcd.tmp"
    other_host = tmp_path / f".c.png.00000000-{pid}.0123abcd.tmp"
    for p in (stale, alive, other_host):
        p.write_bytes(b"x")
    assert batch.clean_temporaries(tmp_path) == (1 if host_tag() != "00000000" else 2)
    assert not stale.exists() and alive.exists()


def test_two_inputs_for_one_output_are_refused(tmp_path):
    src = _folder(tmp_path / "in", n=2)
    Image.open(src / "im00.png").save(src / "im00.jpg")
    with pytest.raises(VaekitError, match="would both write"):
        batch.plan(src, tmp_path / "out", sorted(src.rglob("*.*")), lambda rel: rel.with_suffix(".png"))


def test_an_output_folder_inside_the_input_folder_is_never_read_as_input(tmp_path, capsys):
    src = _folder(tmp_path / "in", n=4)
    out = src / "clean"
    args = ["compensate", str(src), "-o", str(out), "--method", "gray-world", "--quiet"]
    for _ in range(2):  # the rerun found the first run's outputs as new inputs and wrote clean/clean/...
        capsys.readouterr()
        assert main(args) == 0
    assert "0 of 4 inputs" in capsys.readouterr().out and not (out / "clean").exists()
    assert sorted(_pngs(out)) == sorted(
        p.relative_to(src).as_posix() for p in src.rglob("im*.png") if out not in p.parents
    )
    with pytest.raises(VaekitError, match="nothing to do"):
        batch.plan(out, out / "again", [out / "again" / "x.png"], lambda rel: rel)


def test_bench_throughput_times_one_and_two_processes_on_the_same_bytes(tmp_path):
    from vaekit.bench import BENCHES

    src = _folder(tmp_path / "in", n=3)
    payload = BENCHES["throughput"](
        data_dir=str(src), tasks="compensate", processes="1,2", output=str(tmp_path / "res"), quiet=True
    )
    rows = payload["results"]
    assert [(r["task"], r["processes"]) for r in rows] == [("compensate", 1), ("compensate", 2)]
    assert all(r["images"] == 3 and r["images_per_s"] > 0 and r["same_as_1_process"] for r in rows)
    assert {p.name for p in (tmp_path / "res").iterdir()} >= {"throughput.json", "throughput.md", "throughput.png"}
