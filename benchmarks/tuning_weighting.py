"""Where MetaSchedule's trials go: each task's share of the budget weighted by FLOPs (occurrences x
FLOPs, the default) or by its measured time in the untuned module (`weighting: profile`), at the same
trial budget, on both quickstart architectures (ResNet-18 and MobileNetV2 at 112x112, batch 1). Each
weighting tunes into a fresh cache; the tuned cells are then timed as a sweep times them (3 processes).
Prints the tuned p50 each way and the ratio (flops / profile: above 1, profile weighting is faster).

    python -m benchmarks.tuning_weighting [TRIALS [DIR [REPEATS]]]   # default 128 trials, 3 processes: about 25 minutes on 2 cores

DIR (default: a temporary one) keeps the tuning databases and runs: run again with the same DIR and
the cells are timed again without tuning again. Keep the machine otherwise idle: MetaSchedule's
measurements and the timed runs share its cores.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

ARCHS = ("resnet18", "mobilenet_v2")


def weighting_config(arch: str, weighting: str, trials: int, repeats: int = 3) -> dict:
    return {
        "name": f"weighting-{arch}-{weighting}",
        "models": [{"name": arch, "source": f"zoo:{arch}", "input_shapes": {"input": ["batch", 3, 112, 112]}}],
        "backends": ["tvm_tuned"], "precisions": ["fp32"], "batch_sizes": [1],
        "reference": {"backend": "onnxruntime", "precision": "fp32"},
        "timing": {"warmup": 2, "min_iterations": 10, "min_time_s": 1.0}, "validation": {"iterations": 1}, "repeats": repeats,
        "backend_options": {"tvm_tuned": {"trials": trials, "min_trials_per_task": 1, "weighting": weighting}},
    }


def main(trials: int = 128, keep: str | None = None, repeats: int = 3) -> int:
    import pandas as pd

    from bench.config import config_from_dict
    from bench.runner import execute, plan

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(keep) if keep else Path(tmp)
        for arch in ARCHS:
            for weighting in ("flops", "profile"):
                cfg = config_from_dict(weighting_config(arch, weighting, trials, repeats))
                run_dir = execute(plan(cfg, REPO / "models"), work / "results", cache_dir=work / f"cache-{weighting}")
                r = pd.read_csv(run_dir / "cells.csv").iloc[0]
                rows.append({"arch": arch, "weighting": weighting, "status": r["status"], "trials": r.get("tuning_trials_spent"),
                             "tuning_s": r.get("tuning_s"), "tuned_tasks": f"{r.get('tuned_tasks')}/{r.get('total_tasks')}",
                             "p50_ms": r.get("p50_ms"), "p50_ci": f"{r.get('p50_ci_low_ms', float('nan')):.3f}-{r.get('p50_ci_high_ms', float('nan')):.3f}",
                             "estimated_ms": r.get("tuning_estimated_ms")})
                print(rows[-1], flush=True)
    df = pd.DataFrame(rows)
    pd.set_option("display.width", 200)
    print(df.to_string(index=False))
    for arch in ARCHS:
        p = df[df.arch == arch].set_index("weighting")["p50_ms"]
        print(f"{arch}: tuned p50 flops {p['flops']:.3f} ms, profile {p['profile']:.3f} ms, flops/profile {p['flops'] / p['profile']:.3f}")
    return 0


if __name__ == "__main__":
    args = sys.argv[1:]
    sys.exit(main(int(args[0]) if args else 128, args[1] if len(args) > 1 else None, int(args[2]) if len(args) > 2 else 3))
