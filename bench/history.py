"""Run-to-run drift, estimated from history: the spread of a cell's figure over repeated runs of the
same grid on a machine of the same environment.

Within one run, the processes' spread is all a statistic can see; on a shared or thermally limited
machine most of the variance lies between runs minutes apart, so a cross-run interval built from
within-run variation alone is overconfident (more processes make it narrower, never right). The
runs under a results directory already hold the history: complete runs whose grid (the config less
its name) and environment (CPU, cores, affinity, threads, OS, Python, library versions) match.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from bench.registry import scenario_flag
from bench.results import StoredRun, cell_key, load_run

MIN_RUNS = 3  # runs of a cell needed to estimate its drift (2 degrees of freedom)
ENV_KEYS = ("cpu_model", "cpu_count", "cpu_affinity", "threads", "os", "python", "libraries")


def grid_identity(meta: dict[str, Any]) -> str:
    """What must match for two runs to be repeats of one another: the config less its name, and the
    environment's comparable facts (not the host name, the git commit or the time)."""
    cfg = {k: v for k, v in meta.get("config", {}).items() if k != "name"}
    env = {k: meta.get("environment", {}).get(k) for k in ENV_KEYS}
    return hashlib.sha256(json.dumps([cfg, env], sort_keys=True, default=str).encode()).hexdigest()[:16]


def figure(r: Any) -> float | None:
    """A cell's headline figure as a time: p50 in ms, or for a throughput scenario ms per sample."""
    if scenario_flag(str(r.get("scenario") or "single_stream"), "throughput"):
        q = r.get("achieved_qps")
        return 1e3 / float(q) if isinstance(q, (int, float)) and q == q and q > 0 else None
    p = r.get("p50_ms")
    return float(p) if isinstance(p, (int, float)) and p == p and p > 0 else None


def similar_runs(run: StoredRun, dirs: Iterable[Path], exclude: Iterable[Path] = ()) -> list[StoredRun]:
    """Complete runs under `dirs` (each a results directory) with `run`'s grid identity, `run`
    included, those in `exclude` left out."""
    want = grid_identity(run.meta)
    skip = {Path(p).resolve() for p in exclude}
    found: dict[Path, StoredRun] = {}
    for d in dict.fromkeys(Path(x).resolve() for x in dirs):
        for meta_path in sorted(d.glob("*/meta.json")):
            r = meta_path.parent.resolve()
            if r in skip or r in found:
                continue
            try:
                meta = json.loads(meta_path.read_text())
            except (OSError, ValueError):
                continue
            # a shard holds a slice of its merged run's cells: counting both would count those figures twice
            if meta.get("status") == "complete" and not meta.get("shard") and grid_identity(meta) == want:
                found[r] = load_run(r)
    return list(found.values())


@dataclass
class Drift:
    """Run-to-run standard deviation of log figures: per cell (with its runs) and pooled over cells."""

    runs: int
    per_cell: dict[tuple, tuple[float, int]] = field(default_factory=dict)  # key -> (sd of log figure, runs)
    pooled: float | None = None
    pooled_df: int = 0

    def sd(self, key: tuple) -> tuple[float, int] | None:
        """(sd, degrees of freedom) for a cell: the larger of its own and the pooled estimate."""
        own = self.per_cell.get(key)
        options = [(own[0], own[1] - 1)] if own and own[1] >= MIN_RUNS else []
        if self.pooled is not None:
            options.append((self.pooled, self.pooled_df))
        return max(options) if options else None

    def note(self, key: tuple) -> str:
        s = self.sd(key)
        if s is None:
            return (f"no run-to-run history ({self.runs} similar run(s), {MIN_RUNS} needed): the interval covers variation "
                    "within the two runs only; repeat the run into the same results directory to estimate drift")
        own = self.per_cell.get(key, (0.0, 0))[1]
        return f"run-to-run drift sd {math.expm1(s[0]):.1%} (this cell in {own} of {self.runs} similar runs; pooled over cells)"


def estimate(runs: list[StoredRun]) -> Drift:
    """Each cell's log figure over the runs that have it ok: its own standard deviation (from two
    runs), and the pooled one over the cells seen in at least MIN_RUNS runs."""
    values: dict[tuple, list[float]] = {}
    for run in runs:
        for _, r in run.cells.iterrows():
            v = figure(r) if r.get("status") == "ok" else None
            if v is not None:
                values.setdefault(cell_key(r), []).append(math.log(v))
    drift = Drift(len(runs))
    ss, df = 0.0, 0
    for key, logs in values.items():
        if len(logs) >= 2:
            sd = float(np.std(logs, ddof=1))
            drift.per_cell[key] = (sd, len(logs))
            if len(logs) >= MIN_RUNS:
                ss += sd ** 2 * (len(logs) - 1)
                df += len(logs) - 1
    if df:
        drift.pooled, drift.pooled_df = math.sqrt(ss / df), df
    return drift
