"""The zoo's newest architectures through every CPU backend and precision: ViT-S/16 and EfficientNet-B0
(their -tiny variants), ONNX Runtime and untuned TVM, fp32, fp16 and int8; every cell must run and be
validated (a cell outside its tolerance is printed, not a failure: EfficientNet's int8 moves a logit by
about 1 on this VM). `make test` runs the cheap part of this grid (tests/test_models.py); TVM's int8
and EfficientNet's fp16 compiles (about 40 s on 2 cores) are here.

    python -m benchmarks.zoo_matrix
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def zoo_matrix_config(exclude: list[dict] | None = None) -> dict:
    return {
        "name": "zoo-now", "models": [{"name": "vit", "source": "zoo:vit_s16-tiny"}, {"name": "effnet", "source": "zoo:efficientnet_b0-tiny"}],
        "backends": ["onnxruntime", "tvm"], "precisions": ["fp32", "fp16", "int8"], "batch_sizes": [2],
        "timing": {"warmup": 1, "min_iterations": 3, "min_time_s": 0.0}, "calibration": {"samples": 16}, "repeats": 1,
        "exclude": exclude or [],
    }


def main() -> int:
    import pandas as pd

    from bench.config import config_from_dict
    from bench.runner import execute, plan

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        run_dir = execute(plan(config_from_dict(zoo_matrix_config()), work / "models"), work / "results", isolate=False,
                          cache_dir=work / "cache")
        cells = pd.read_csv(run_dir / "cells.csv")
    pd.set_option("display.width", 200)
    print(cells[["model", "backend", "precision", "status", "validated", "accuracy_ok", "cosine", "max_abs_err", "compile_s"]].to_string())
    bad = cells[(cells["status"] != "ok") | ~cells["validated"].astype(bool)]
    print(f"{len(cells)} cells: {len(cells) - len(bad)} ran and validated ({int(cells['accuracy_ok'].fillna(False).astype(bool).sum())} "
          f"within their tolerance); {len(bad)} did not")
    return 1 if len(bad) else 0


if __name__ == "__main__":
    sys.exit(main())
