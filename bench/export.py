"""A stored run as pytest-benchmark JSON, so dashboards that chart pytest-benchmark can chart bench."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from bench.results import CELL_COLUMNS, StoredRun, cell_key, cell_slug

PYTEST_BENCHMARK_FORMAT = "5.1.0"  # the pytest-benchmark release whose file layout this follows


def _stats(ms: np.ndarray) -> dict[str, Any]:
    s = ms / 1e3  # pytest-benchmark stores seconds
    q1, median, q3 = (float(v) for v in np.percentile(s, [25, 50, 75]))
    iqr = q3 - q1
    mean, std = float(s.mean()), float(s.std(ddof=1)) if s.size > 1 else 0.0
    lo_fence, hi_fence = q1 - 1.5 * iqr, q3 + 1.5 * iqr
    inside = s[(s >= lo_fence) & (s <= hi_fence)]
    iqr_out = int(s.size - inside.size)
    std_out = int(np.count_nonzero(np.abs(s - mean) > std)) if std > 0 else 0
    return {
        "min": float(s.min()), "max": float(s.max()), "mean": mean, "stddev": std, "rounds": int(s.size),
        "median": median, "iqr": iqr, "q1": q1, "q3": q3, "iqr_outliers": iqr_out, "stddev_outliers": std_out,
        "outliers": f"{std_out};{iqr_out}", "ld15iqr": float(inside.min()) if inside.size else float(s.min()),
        "hd15iqr": float(inside.max()) if inside.size else float(s.max()), "ops": 1 / mean if mean > 0 else 0.0,
        "total": float(s.sum()), "iterations": 1,
    }


def _text(v: Any) -> str | None:
    return None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)


def to_pytest_benchmark(run: StoredRun) -> dict[str, Any]:
    env = run.meta.get("environment", {})
    cells = {cell_key(r): r for _, r in run.cells.iterrows()}
    benchmarks = []
    for key, g in run.samples.groupby(CELL_COLUMNS):
        cell = cells[cell_key(dict(zip(CELL_COLUMNS, key)))]
        model, backend, precision, batch, scenario, streams, rate, target = cell_key(cell)
        params = {"backend": backend, "precision": precision, "batch_size": int(batch), "variant": cell["variant"],
                  "scenario": scenario, "streams": int(streams), "rate": rate, "target": target}
        name = f"{model}[{cell_slug(cell).removeprefix(model + '-')}]"
        extra = {k: (None if pd.isna(v) else v) for k, v in cell[["max_abs_err", "cosine", "accuracy_ok", "unstable",
                                                                  "throughput_ips", "provider", "threads"]].items()}
        extra["host"] = _text(cell.get("host")) or env.get("hostname")
        benchmarks.append({
            "group": str(model), "name": name, "fullname": f"{run.run_id}::{name}",
            "params": params, "param": name[len(model) + 1:-1],
            "extra_info": {k: (v.item() if hasattr(v, "item") else v) for k, v in extra.items()},
            "options": {"timer": _text(cell.get("timer")) or "perf_counter_ns",  # rows before `timer` existed: the host clock
                        "warmup": run.meta.get("config", {}).get("timing", {}).get("warmup")},
            "stats": _stats(g["latency_ms"].to_numpy(dtype=float)),
        })
    commit = env.get("git_commit") or ""
    return {
        # The machine that ran the benchmark (meta.json), not the one exporting it.
        "machine_info": {"node": env.get("hostname") or "unknown", "processor": env.get("cpu_model"),
                         "machine": env.get("machine") or "unknown",
                         "python_version": env.get("python"), "system": env.get("os"),
                         "cpu": {"brand_raw": env.get("cpu_model"), "count": env.get("cpu_count")}},
        "commit_info": {"id": commit.removesuffix("-dirty"), "dirty": commit.endswith("-dirty")},
        "benchmarks": benchmarks,
        "datetime": run.meta.get("started_at"),
        "version": PYTEST_BENCHMARK_FORMAT,
    }
