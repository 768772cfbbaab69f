"""A/B inside one run: the comparison that can resolve a small change on a noisy machine.

Two configs (a base and a head: two model files, two option sets, two engine versions through
`targets`, or the same config twice for an A/A check) are planned; their cells are paired by grid
key (`target` aside). For each pair, rounds of one worker process of each variant run back to back
in a random order (A B, B A, B A, A B, ...), so that whatever the machine does over minutes hits
both alike. Each round gives one paired difference, the log ratio of the two processes' medians;
the change's 95% interval is Student's t over the rounds' differences. Rounds go on after
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
from bench.results import CELL_COLUMNS, cell_key
from bench.rundir import RunDir, new_run_id
from bench.runner import Plan, Reporter, _CellState, _Sweep, backend_preloads, _check_machine
from bench.timing import t975
from bench.verdicts import verdict
from bench.worker import INTERRUPTS, preload_for

PAIR_KEY = [c for c in CELL_COLUMNS if c != "target"]
AB_COLUMNS = [*PAIR_KEY, "target_a", "target_b", "rounds", "p50_a_ms", "p50_b_ms", "change", "ci_low", "ci_high", "verdict",
              "order", "note"]


@dataclass(frozen=True)
class Rounds:
    min_rounds: int = 5
    max_rounds: int = 15
    threshold: float = 0.05

    def __post_init__(self) -> None:
        if self.min_rounds < 2:
            raise BenchError(f"--rounds {self.min_rounds}: a paired interval needs at least 2 rounds")
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


def paired_interval(a_medians: list[float], b_medians: list[float]) -> tuple[float, float, float]:
    """(change, low, high) of B against A from paired rounds: the mean of the rounds' log ratios,
    +- Student's t (rounds - 1 df) x its standard error, back on the ratio scale."""
    d = np.log(np.asarray(b_medians) / np.asarray(a_medians))
    mean = float(d.mean())
    half = t975(d.size - 1) * float(d.std(ddof=1)) / math.sqrt(d.size) if d.size > 1 else float("inf")
    return math.expm1(mean), math.expm1(mean - half), math.expm1(mean + half)


class _Pair:
    def __init__(self, sa: _Sweep, sb: _Sweep, ca: Cell, cb: Cell):
        self.sweeps, self.cells = (sa, sb), (ca, cb)
        self.states: list[_CellState | None] = [None, None]
        self.order: list[str] = []

    def process(self, side: int) -> None:
        sweep, state = self.sweeps[side], self.states[side]
        if state is None:
            self.states[side] = sweep.begin_cell(self.cells[side])
        else:
            sweep.add_process(state)
        self.order.append("AB"[side])

    @property
    def ok(self) -> bool:
        return all(s is not None and s.ok and len(s.per_process) == len(s.outcomes) for s in self.states)

    def medians(self) -> tuple[list[float], list[float]]:
        a, b = (s.per_process for s in self.states)  # type: ignore[union-attr]
        n = min(len(a), len(b))
        return [float(np.median(p)) / 1e6 for p in a[:n]], [float(np.median(p)) / 1e6 for p in b[:n]]


def _decided(pair: _Pair, rounds: Rounds) -> bool:
    ma, mb = pair.medians()
    if len(ma) < rounds.min_rounds:
        return False
    _, lo, hi = paired_interval(ma, mb)
    return verdict(lo, hi, rounds.threshold) != "inconclusive"


def _run_pair(pair: _Pair, rounds: Rounds, rng: random.Random) -> None:
    """Rounds of one process per side, in a random order each round, until decided or spent."""
    for r in range(rounds.max_rounds):
        for side in rng.sample((0, 1), 2):
            INTERRUPTS.check()
            pair.process(side)
        if not pair.ok or _decided(pair, rounds):
            return


def _row(pair: _Pair, rounds: Rounds) -> dict[str, Any]:
    ca, cb = pair.cells
    row: dict[str, Any] = {**{k: getattr(ca, k) for k in PAIR_KEY}, "target_a": ca.target, "target_b": cb.target,
                           "order": "".join(pair.order)}
    sa, sb = pair.states
    if sa is None or sb is None:
        return {**row, "rounds": 0, "verdict": "missing", "note": "interrupted before both variants ran"}
    if not pair.ok:
        why = [f"{n}: {s.row['status']} ({str(s.row.get('error') or '')[:160]})" for n, s in zip("AB", (sa, sb)) if s is not None and not s.ok]
        no_samples = [n for n, s in zip("AB", (sa, sb)) if s is not None and s.ok]
        note = "; ".join(why) or f"{', '.join(no_samples)}: no per-call samples (A/B pairs per-call latencies; use bench compare)"
        return {**row, "rounds": len(pair.order) // 2, "verdict": "missing", "note": note}
    ma, mb = pair.medians()
    change, lo, hi = paired_interval(ma, mb)
    v = verdict(lo, hi, rounds.threshold)
    stop = ("decided" if v != "inconclusive" else f"undecided after max_rounds {rounds.max_rounds}") if len(ma) >= rounds.min_rounds else ""
    return {**row, "rounds": len(ma), "p50_a_ms": float(np.median(np.concatenate(sa.per_process))) / 1e6,  # type: ignore[union-attr]
            "p50_b_ms": float(np.median(np.concatenate(sb.per_process))) / 1e6, "change": change, "ci_low": lo, "ci_high": hi,  # type: ignore[union-attr]
            "verdict": v, "note": f"{len(ma)} paired rounds, {stop}"}


def run_ab(a: Plan, b: Plan, results_dir: Path | str, rounds: Rounds, reporter: Reporter | None = None,
           ab_id: str | None = None, isolate: bool = True, cache_dir: Path | str | None = None) -> tuple[Path, Path, pd.DataFrame]:
    """Run every pair of cells, A and B interleaved round by round; returns both run directories and
    the verdicts (also written to each as ab.csv)."""
    reporter = reporter or Reporter()
    pairs, unpaired = pair_cells(a, b)
    for line in unpaired:
        reporter.warn(f"not paired, not run: {line}")
    _check_machine(True)
    preload_for(backend_preloads([*a.config.backends, *b.config.backends, a.config.reference.backend, b.config.reference.backend]))
    ab_id = ab_id or new_run_id(f"{a.config.name}-ab")
    cache = Path(cache_dir) if cache_dir else default_cache_root()
    out = Path(results_dir)
    runs = [RunDir.open(p, out, f"{ab_id}-{side}", False, [c[i] for c in pairs], isolate, None) for i, (p, side) in
            enumerate(((a, "A"), (b, "B")))]
    rng = random.Random(a.config.seed)
    rows: list[dict[str, Any]] = []
    status, error = "failed", None
    interrupts = INTERRUPTS.install() if isolate else None
    try:
        for run, other in zip(runs, reversed(runs)):
            run.meta["ab"] = {"id": ab_id, "role": run.path.name[-1], "other": other.path.name, "min_rounds": rounds.min_rounds,
                              "max_rounds": rounds.max_rounds, "threshold": rounds.threshold}
            run.begin(False)
        sweeps = [_Sweep(p, run.meta["run_id"], run.path, reporter, isolate, cache, True, LocalExecutor()) for p, run in zip((a, b), runs)]
        reporter.start(len(pairs), ab_id)
        for i, (ca, cb) in enumerate(pairs):
            reporter.cell(i, ca)
            pair = _Pair(*sweeps, ca, cb)
            try:
                _run_pair(pair, rounds, rng)
            finally:
                rows.append(_finish(pair, rounds, runs))
            r = rows[-1]
            reporter.done({**r, "status": "ok" if r["verdict"] != "missing" else "missing", "error": r["note"],
                           "p50_ms": r.get("p50_b_ms")})
        status = "complete"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    except BaseException as e:
        error = e
        raise
    finally:
        if interrupts is not None:
            interrupts.uninstall()
            interrupts.requested = False
        table = pd.DataFrame(rows, columns=AB_COLUMNS)
        for run in runs:
            table.to_csv(run.path / "ab.csv", index=False)
            run.close(status, error)
            run.lock.release()
    return runs[0].path, runs[1].path, table


def _finish(pair: _Pair, rounds: Rounds, runs: list[RunDir]) -> dict[str, Any]:
    """Journal each side's row (with what it measured, even when interrupted) and give the verdict row."""
    out = _row(pair, rounds)
    for side, (sweep, state) in enumerate(zip(pair.sweeps, pair.states)):
        if state is None:
            continue
        row, samples = sweep.end_cell(state)
        row["repeats_stop"] = f"A/B {'base (A)' if side == 0 else 'head (B)'}: {out['note']}"
        results.append_cell(runs[side].path, row, samples)
    return out


def describe(table: pd.DataFrame) -> str:
    """One line of counts per verdict."""
    return ", ".join(f"{v}: {n}" for v, n in sorted(table["verdict"].value_counts().to_dict().items()))


def load(run_dir: Path) -> pd.DataFrame:
    """The verdicts an A/B run wrote (either side's directory)."""
    p = Path(run_dir) / "ab.csv"
    if not p.is_file():
        raise BenchError(f"{run_dir}: no ab.csv; it is written by `bench ab`")
    return pd.read_csv(p)

