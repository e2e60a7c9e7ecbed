"""Generate docs/benchmarks.md and the README's headline table from results/ (never retyped by hand).

    python scripts/benchmarks_doc.py            # rewrite both
    python scripts/benchmarks_doc.py --check    # exit 1 if either is out of date (the tests run this)

docs/benchmarks.md holds every results/<task>-<set>.md table (and those in results/'s folders) with its picture
and the command that made it.
The README's block between the ``headline`` markers holds one line per task from the JSON summaries.
"""

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results"
START, END = "<!-- headline:start (scripts/benchmarks_doc.py) -->", "<!-- headline:end -->"
ORDER = ("denoise", "inpaint", "compress", "compensate", "augment", "generate", "throughput", "serve")


def _load(stem):
    p = RESULTS / f"{stem}.json"
    return json.loads(p.read_text()) if p.is_file() else None


def _best(summary: dict, names) -> tuple[str, float] | None:
    got = [(n, summary[n]["psnr"]) for n in names if n in summary and "psnr" in summary[n]]
    return max(got, key=lambda t: t[1]) if got else None


def headline_rows() -> tuple[list[str], bool, bool]:
    """The headline's rows, whether any row compares seconds measured on different CPUs, and whether any BM3D row's
    seconds were taken on every core (runs before the baseline kept to the thread budget)."""
    rows, mixed, dagger = [], False, False
    protocols = (
        ("sigma25", "σ=25, float input"),
        ("sigma25-clipped", "σ=25, 8-bit files"),
        ("camera", "simulated camera files, blind"),
        ("real", "real, blind"),
    )
    for set_name in ("cbsd68", "mcmaster", "kodak", "photos-val", "bsd68", "set12", "realnoise-cc15"):
        r = _load(f"denoise-{set_name}")
        for tag, what in protocols:
            s = r and r["summary"].get(tag)
            if not s or "vae" not in s:
                continue
            ref = _best(s, [n for n in s if not n.startswith("vae") and n != "noisy"])  # the best classical one
            cpus = [{r["runs"][i].get("cpu") for i in s[m].get("runs", [])} for m in ("vae", ref[0])]
            mark = "" if cpus[0] == cpus[1] else "*"  # rows merged from runs on other machines
            mixed |= bool(mark)
            all_cores = ref[0] == "bm3d" and any("bm3d_threads" not in r["runs"][i] for i in s["bm3d"].get("runs", []))
            dagger |= all_cores
            rows.append(
                f"| denoise, {what} | {set_name} ({r['n_images']}) | {s['vae']['psnr']:.2f} dB, "
                + (f"noisy input {s['noisy']['psnr']:.2f} dB, " if tag in ("real", "camera") else "")
                + f"{s['vae']['seconds_median']:.2f} s{mark} | {ref[0]} {ref[1]:.2f} dB, "
                f"{s[ref[0]]['seconds_median']:.1f} s{mark}{'†' * all_cores} | {s['vae']['psnr'] - ref[1]:+.2f} dB |"
            )
    for set_name in ("cbsd68", "kodak"):
        r = _load(f"inpaint-{set_name}")
        if not r:
            continue
        for mask in ("pixels0.5", "strokes-thin", "box"):
            v = r["summary"].get(mask, {}).get("vae")
            if v:
                best = r["summary"][mask].get("best_classical")
                rows.append(
                    f"| inpaint {mask} (hole PSNR) | {set_name} | {v['hole_psnr']:.2f} dB | {best} "
                    f"{r['summary'][mask][best]['hole_psnr']:.2f} dB | "
                    f"{v['margin_over_best_classical']:+.2f} dB |"
                )
    for set_name in ("kodak", "photos-val"):
        r = _load(f"compress-{set_name}")
        if r:
            bd = r["bd_rate"]
            vs = [(bd["vaekit"].get(f"vs_{c}"), n) for c, n in (("webp", "WebP"), ("avif", "AVIF"))]
            rows.append(
                f"| compress (BD-rate, PSNR) | {set_name} | {bd['vaekit']['vs_jpeg']:+.1f}% vs JPEG | "
                f"WebP {bd['webp']['vs_jpeg']:+.1f}%, AVIF {bd['avif']['vs_jpeg']:+.1f}% vs JPEG | "
                + ", ".join(f"{v:+.1f}% vs {n}" for v, n in vs if v is not None)
                + " |"
            )
    for set_name in ("kodak", "photos-val"):
        r = _load(f"compensate-{set_name}")
        if r and "vae" in r["summary"].get("strong", {}):
            for case, label in (("identity", "unaltered photo (PSNR ≤ 60)"), ("strong", "strong exposure/cast (PSNR)")):
                v = r["summary"][case]
                b = max((m for m in v if m not in ("none", "vae")), key=lambda m: v[m]["psnr"])
                rows.append(
                    f"| compensate, {label} | {set_name} | {v['vae']['psnr']:.2f} dB | {b} "
                    f"{v[b]['psnr']:.2f} dB | {v['vae']['psnr'] - v[b]['psnr']:+.2f} dB |"
                )
    r = _load("generate-mnist")
    if r:
        m = r["metrics"]
        rows.append(
            f"| generate (test NLL, IWAE) | mnist | {m['nll']:.2f} nats | published 2-layer VAE 85.33 | "
            f"{m['nll'] - 85.33:+.2f} nats |"
        )
    return rows, mixed, dagger


def headline() -> str:
    head = ["| task | set | vaekit | classical (same inputs) | difference |", "|---|---|---|---|---|"]
    rows, mixed, dagger = headline_rows()
    note = ["\\* seconds from runs on different CPUs (the set's table names them): compare them within a run."]
    note_all = [
        "† BM3D on every core of its machine, vaekit on one thread beside other work; both at one thread with "
        "nothing else running: `results/denoise-speed/`."
    ]
    notes = (note if mixed else []) + (note_all if dagger else [])
    return "\n".join([START, *head, *rows, *([""] + notes if notes else []), END])


def benchmarks_md() -> str:
    out = [
        "# Benchmarks",
        "",
        "Generated by `python scripts/benchmarks_doc.py` from `results/`; each section is one "
        "`results/<task>-<set>.md` with the command that reproduces it. Per-image values are in "
        "`results/<task>-<set>.per_image.json.xz`.",
        "",
    ]
    for task in ORDER:
        # results/ itself, then its folders (runs of one setting, e.g. results/compress-effort/)
        mds = [*RESULTS.glob(f"{task}.md"), *RESULTS.glob(f"{task}-*.md"), *RESULTS.glob(f"*/{task}-*.md")]
        for md in sorted((p for p in mds if not p.stem.endswith("-psnr")), key=lambda p: (p.parent != RESULTS, p)):
            name = md.relative_to(RESULTS).with_suffix("").as_posix()
            out += [f"## {name}", "", md.read_text().strip(), ""]
            for pic in (md.with_suffix(".png"), md.with_name(md.stem + "-psnr.png")):
                if pic.is_file():
                    out += [f"![{pic.stem}](../results/{pic.relative_to(RESULTS).as_posix()})", ""]
    return "\n".join(out)


def main(check: bool) -> int:
    readme = ROOT / "README.md"
    text = readme.read_text()
    if START not in text or END not in text:
        print("README.md has no headline markers", file=sys.stderr)
        return 1
    new_readme = text[: text.index(START)] + headline() + text[text.index(END) + len(END) :]
    doc = ROOT / "docs" / "benchmarks.md"
    new_doc = benchmarks_md()
    stale = [p for p, new in ((readme, new_readme), (doc, new_doc)) if not p.is_file() or p.read_text() != new]
    if check:
        for p in stale:
            print(f"{p.relative_to(ROOT)} is out of date: run python scripts/benchmarks_doc.py", file=sys.stderr)
        return 1 if stale else 0
    readme.write_text(new_readme)
    doc.write_text(new_doc)
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true")
    sys.exit(main(ap.parse_args().check))
