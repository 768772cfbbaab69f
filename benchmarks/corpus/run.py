"""The real-model corpus through every CPU backend and precision: the figure issue 21 asks for.

    python benchmarks/corpus/run.py [--only NAME ...] [--backends onnxruntime tvm] [--results-dir results]

Fetches the corpus (fetch.py, into models/corpus/), runs one grid (each model at its manifest's
small size, batch 1, fp32/fp16/int8, ONNX Runtime and untuned TVM) and prints, per cell and in
total: ok and validated / refused with the engine's limit named (skipped) / anything else (failed,
crashed, not validated). Cells that ran and were validated but fell outside their tolerance are
counted apart: a finding about that precision on that model, not a failure of the suite. Exit
status 1 when the last number is not 0.
Tolerances: the defaults, except per output where the manifest gives `tolerances` (a detector's
box output judged relative to its range, say).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))


def corpus_config(entries: list[dict], target: Path, backends: list[str]) -> dict:
    models = []
    for e in entries:
        spec = {"name": e["name"].replace(".", "_"), "source": str(target / f"{e['name']}.onnx"),
                "input_shapes": e["bench"]["input_shapes"]}
        for key in ("input_ranges", "output_tolerances", "tolerances"):
            if e["bench"].get(key):
                spec[key] = e["bench"][key]
        models.append(spec)
    return {"name": "corpus", "models": models, "backends": backends, "precisions": ["fp32", "fp16", "int8"],
            "batch_sizes": [1], "timing": {"warmup": 1, "min_iterations": 3, "min_time_s": 0.0}, "repeats": 1,
            "calibration": {"samples": 8}, "cell_timeout_s": 900}


def classify(cells) -> "object":
    """Each cell's verdict: ok and validated within its tolerances; validated but outside them (a
    finding about the precision, published and marked); refused with the engine's limit named
    (skipped with the reason, or an importer that failed at a named node); anything else (failed,
    crashed, timed out, not validated)."""
    validated = (cells["status"] == "ok") & cells["validated"].fillna(False).astype(bool)
    within = validated & cells["accuracy_ok"].fillna(False).astype(bool)
    # an importer that fails converting a named node is the engine's limit, said where it is
    named = cells["error"].fillna("").str.contains(r"importer failed at (?:node|\w+ \(node)", regex=True)
    verdict = (cells["status"].eq("skipped") | (cells["status"].eq("failed") & named)).map({True: "refused", False: "other"})
    verdict[validated] = "outside tolerance"
    verdict[within] = "ok+validated"
    return verdict


def main() -> int:
    import pandas as pd

    from bench.config import config_from_dict
    from bench.runner import execute, plan

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", metavar="NAME")
    ap.add_argument("--backends", nargs="+", default=["onnxruntime", "tvm"])
    ap.add_argument("--results-dir", type=Path, default=REPO / "results")
    ap.add_argument("--models-dir", type=Path, default=REPO / "models" / "corpus")
    args = ap.parse_args()
    fetch = [sys.executable, str(HERE / "fetch.py"), str(args.models_dir)] + (["--only", *args.only] if args.only else [])
    subprocess.run(fetch, check=True)
    entries = yaml.safe_load((HERE / "manifest.yaml").read_text())["models"]
    entries = [e for e in entries if not args.only or e["name"] in args.only]
    cfg = config_from_dict(corpus_config(entries, args.models_dir, args.backends))
    run_dir = execute(plan(cfg, args.models_dir), args.results_dir, isolate=True)
    cells = pd.read_csv(run_dir / "cells.csv")
    cells["verdict"] = classify(cells)
    pd.set_option("display.width", 250)
    pd.set_option("display.max_colwidth", 160)
    print(cells[["model", "backend", "precision", "verdict", "cosine", "precision_route", "preparation", "error", "accuracy_note"]].to_string())
    counts = cells["verdict"].value_counts()
    print(f"\n{run_dir}\n{len(cells)} cells of {len(entries)} models: {counts.get('ok+validated', 0)} ok and validated / "
          f"{counts.get('outside tolerance', 0)} validated outside their tolerance (published, marked) / "
          f"{counts.get('refused', 0)} refused with the engine's limit named / {counts.get('other', 0)} other")
    return 1 if counts.get("other", 0) else 0


if __name__ == "__main__":
    sys.exit(main())
