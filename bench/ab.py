"""A/B inside one run: the comparison that can resolve a small change on a noisy machine.

Two configs (a base and a head: two model files, two option sets, two engine versions through
`targets`, or the same config twice for an A/A check) are planned; their cells are paired by grid
key (`target` aside). For each pair, rounds of one worker process of each variant run back to back
in a random order (A B, B A, B A, A B, ...), so that whatever the machine does over minutes hits
both alike. Each round gives one paired difference, the log ratio of the two processes' medians;
the change is the median of the rounds' differences and its 95% interval the exact sign-test one
(paired_interval): distribution-free, exact under no change (each round's random order makes its
difference as likely positive as negative), and a round spoiled by a burst of noise counts as one
round however large, where it would widen a mean's t-interval. Rounds go on after
`min_rounds` until the interval decides the verdict (beyond, or within, the noise threshold) or
`max_rounds` are spent.

Each variant keeps a run directory of its own (`<id>-A`, `<id>-B`, every table and report as any
run's), and `ab.csv` in both holds the verdicts.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench import results
from bench.cache import default_root as default_cache_root
from bench.config import Cell
from bench.errors import BenchError
from bench.executors import LocalExecutor
from bench.results import CELL_COLUMNS
from bench.rundir import RunDir, new_run_id
from bench.registry import scenario_flag
from bench.runner import Plan, Reporter, _CellState, _Sweep, _check_machine, _check_targets, backend_preloads, open_runs
from bench.verdicts import verdict
from bench.worker import INTERRUPTS, preload_for

PAIR_KEY = [c for c in CELL_COLUMNS if c != "target"]
AB_COLUMNS = [*PAIR_KEY, "target_a", "target_b", "rounds", "p50_a_ms", "p50_b_ms", "change", "ci_low", "ci_high", "verdict",
              "order", "note"]


@dataclass(frozen=True)
class Rounds:
    min_rounds: int = 6
    max_rounds: int = 16
    threshold: float = 0.05

    def __post_init__(self) -> None:
        if self.min_rounds < MIN_ROUNDS:
            raise BenchError(f"--rounds {self.min_rounds}: a 95% paired interval needs at least {MIN_ROUNDS} rounds "
                             f"(with fewer, even all differences of one sign are within chance)")
        if self.max_rounds < self.min_rounds:
            raise BenchError(f"--max-rounds {self.max_rounds} must be at least --rounds {self.min_rounds}")


def pair_cells(a: Plan, b: Plan) -> tuple[list[tuple[Cell, Cell]], list[str]]:
    """Cells of A and B with the same grid key (the machine class aside), in A's grid order, and a
    line for each cell only one side has. No pair at all is bad input."""
    key = lambda c: tuple(getattr(c, k) for k in PAIR_KEY)  # noqa: E731
    bs = {key(c): c for c in b.cells}
    pairs = [(c, bs[key(c)]) for c in a.cells if key(c) in bs]
    ak = {key(c) for c in a.cells}
    unpaired = [f"A only: {c.label}" for c in a.cells if key(c) not in bs] + [f"B only: {c.label}" for c in b.cells if key(c) not in ak]
    if not pairs:
        raise BenchError(f"the two configs share no cell (A has {len(a.cells)}, B has {len(b.cells)}; cells pair by model name, "
                         f"backend, precision, batch size, scenario, streams and rate): {'; '.join(unpaired[:4])}")
    return pairs, unpaired


MIN_ROUNDS = 6  # the fewest paired rounds with which a 95% sign-test interval is finite


def _sign_test_k(n: int, confidence: float = 0.95) -> int:
    """The largest k with P(B <= k - 1) <= (1 - confidence) / 2, B ~ Binomial(n, 1/2): the interval
    runs from the k-th smallest difference to the k-th largest. 0 when no k qualifies."""
    alpha, k, cum = (1 - confidence) / 2, 0, 0.0
    for j in range(n + 1):
        cum += math.comb(n, j) / 2.0 ** n
        if cum > alpha:
            break
        k = j + 1
    return k


def paired_interval(a: list[float], b: list[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """(change, low, high) of B against A from paired rounds, on the ratio scale: the median of the
    rounds' log ratios and its exact distribution-free (sign-test) interval, from the k-th smallest
    to the k-th largest ratio (_sign_test_k). It asks nothing of the differences' distribution but
    that it has that median, and when nothing changed each round's random order makes its
    difference as likely positive as negative: exact then. A round spoiled by a burst of noise on
    one side counts as one round, however large: k - 1 such rounds on a side cannot move it.
    Infinite with fewer than MIN_ROUNDS rounds."""
    d = np.sort(np.log(np.asarray(b, dtype=np.float64) / np.asarray(a, dtype=np.float64)))
    center = float(np.median(d)) if d.size else 0.0
    k = _sign_test_k(d.size, confidence)
    if k < 1:
        return math.expm1(center), -1.0, float("inf")
    return math.expm1(center), math.expm1(float(d[k - 1])), math.expm1(float(d[-k]))


class _Pair:
    def __init__(self, sa: _Sweep, sb: _Sweep, ca: Cell, cb: Cell):
        self.sweeps, self.cells = (sa, sb), (ca, cb)
        self.states: list[_CellState | None] = [None, None]
        self.order: list[str] = []
        self.throughput = bool(scenario_flag(ca.scenario, "throughput"))

    def process(self, side: int) -> None:
        sweep, state = self.sweeps[side], self.states[side]
        if state is None:
            self.states[side] = sweep.begin_cell(self.cells[side])
        else:
            sweep.add_process(state)
        self.order.append("AB"[side])

    def figures(self, state: _CellState) -> list[float]:
        """Each process's figure, as a time (ms): its median latency, or for a throughput scenario
        its time per sample (1000 / samples per second), as `compare` reads it."""
        if self.throughput:
            return [1e3 / f["achieved_qps"] for f in state.figures if f.get("achieved_qps")]
        return [float(np.median(p)) / 1e6 for p in state.per_process if len(p)]

    @property
    def ok(self) -> bool:
        return all(s is not None and s.ok and len(self.figures(s)) == len(s.outcomes) for s in self.states)

    def paired(self) -> tuple[list[float], list[float]]:
        a, b = (self.figures(s) for s in self.states)  # type: ignore[arg-type]
        n = min(len(a), len(b))
        return a[:n], b[:n]


def _decided(pair: _Pair, rounds: Rounds) -> bool:
    ma, mb = pair.paired()
    if len(ma) < rounds.min_rounds:
        return False
    _, lo, hi = paired_interval(ma, mb)
    return verdict(lo, hi, rounds.threshold) != "inconclusive"


def _run_pair(pair: _Pair, rounds: Rounds, rng: random.Random) -> str:
    """Rounds of one process per side, in a random order each round, until decided or spent; why it stopped."""
    for _ in range(rounds.max_rounds):
        for side in rng.sample((0, 1), 2):
            INTERRUPTS.check()
            pair.process(side)
        if not pair.ok:
            return "failed"
        if _decided(pair, rounds):
            return "decided"
    return f"undecided after max_rounds {rounds.max_rounds}"


def _row(pair: _Pair, rounds: Rounds, stop: str) -> dict[str, Any]:
    ca, cb = pair.cells
    row: dict[str, Any] = {**{k: getattr(ca, k) for k in PAIR_KEY}, "target_a": ca.target, "target_b": cb.target,
                           "order": "".join(pair.order)}
    sa, sb = pair.states
    done = len(pair.paired()[0]) if sa is not None and sb is not None else 0
    if stop == "interrupted" or (pair.ok and done < rounds.min_rounds):
        note = f"interrupted after {done} paired rounds" if stop == "interrupted" else f"{done} paired rounds, fewer than {rounds.min_rounds}"
        return {**row, "rounds": done, "verdict": "missing", "note": note}
    if not pair.ok:
        why = [f"{n}: {s.row['status']} ({str(s.row.get('error') or '')[:160]})" for n, s in zip("AB", (sa, sb)) if s is not None and not s.ok]
        return {**row, "rounds": done, "verdict": "missing", "note": "; ".join(why) or "a process gave no figure"}
    ma, mb = pair.paired()
    change, lo, hi = paired_interval(ma, mb)
    return {**row, "rounds": done, "p50_a_ms": float(np.median(ma)), "p50_b_ms": float(np.median(mb)), "change": change,
            "ci_low": lo, "ci_high": hi, "verdict": verdict(lo, hi, rounds.threshold), "note": f"{done} paired rounds, {stop}"}


def run_ab(a: Plan, b: Plan, results_dir: Path | str, rounds: Rounds, reporter: Reporter | None = None,
           ab_id: str | None = None, isolate: bool = True, cache_dir: Path | str | None = None) -> tuple[Path, Path, pd.DataFrame]:
    """Run every pair of cells, A and B interleaved round by round, on this machine; returns both run
    directories and the verdicts (also written to each as ab.csv)."""
    reporter = reporter or Reporter()
    pairs, unpaired = pair_cells(a, b)
    _check_targets(LocalExecutor(), [c for pair in pairs for c in pair], isolate)
    for line in unpaired:
        reporter.warn(f"not paired, not run: {line}")
    _check_machine(True)
    preload_for(backend_preloads([*a.config.backends, *b.config.backends, a.config.reference.backend, b.config.reference.backend]))
    ab_id = ab_id or new_run_id(f"{a.config.name}-ab")
    cache = Path(cache_dir) if cache_dir else default_cache_root()
    rows: list[dict[str, Any]] = []
    with open_runs([(p, f"{ab_id}-{side}", [c[i] for c in pairs]) for i, (p, side) in enumerate(((a, "A"), (b, "B")))],
                   Path(results_dir), isolate) as runs:
        for run, other in zip(runs, reversed(runs)):
            run.meta["ab"] = {"id": ab_id, "role": run.path.name[-1], "other": other.path.name, "min_rounds": rounds.min_rounds,
                              "max_rounds": rounds.max_rounds, "threshold": rounds.threshold}
            run.begin(False)
        sweeps = [_Sweep(p, run.meta["run_id"], run.path, reporter, isolate, cache, True, LocalExecutor()) for p, run in zip((a, b), runs)]
        reporter.start(len(pairs), ab_id)
        try:
            for i, (ca, cb) in enumerate(pairs):
                reporter.cell(i, ca)
                pair, stop = _Pair(*sweeps, ca, cb), "interrupted"
                try:
                    stop = _run_pair(pair, rounds, random.Random(f"{a.config.seed}-{i}"))
                finally:
                    rows.append(_finish(pair, rounds, runs, stop))
                r = rows[-1]
                reporter.done({**r, "status": "ok" if r["verdict"] != "missing" else "missing", "error": r["note"],
                               "p50_ms": r.get("p50_b_ms")})
        finally:
            for run in runs:
                pd.DataFrame(rows, columns=AB_COLUMNS).to_csv(run.path / "ab.csv", index=False)
    return runs[0].path, runs[1].path, pd.DataFrame(rows, columns=AB_COLUMNS)


def _finish(pair: _Pair, rounds: Rounds, runs: list[RunDir], stop: str) -> dict[str, Any]:
    """Journal each side's row (with what it measured, even when interrupted) and give the verdict row."""
    out = _row(pair, rounds, stop)
    for side, (sweep, state) in enumerate(zip(pair.sweeps, pair.states)):
        if state is None:
            continue
        row, samples = sweep.end_cell(state)
        row["repeats_stop"] = f"A/B {'base (A)' if side == 0 else 'head (B)'}: {out['note']}"
        results.append_cell(runs[side].path, row, samples)
    return out
