"""CI verdicts on stored runs: the accuracy gate (drift against tolerances) and the latency comparison
of two runs (a change with its confidence interval and a verdict), each as an exit code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import yaml
from pydantic import TypeAdapter, ValidationError

from bench.registry import DEFAULT_SCENARIO, scenario_flag
from bench import goldens
from bench.config import Precision, Tolerance, judged_as
from bench.errors import BenchError
from bench.results import CELL_COLUMNS, KEY, StoredRun, cell_key, cell_slug, quantized_models_of
from bench.history import Drift
from bench.timing import hierarchical_medians, t975, t_interval
from bench.validate import compare

# --- the accuracy gate --------------------------------------------------------------------------


def load_tolerances(path: str | Path) -> dict[str, Tolerance]:
    p = Path(path)
    if not p.is_file():
        raise BenchError(f"{p}: tolerances file not found")
    try:
        data = yaml.safe_load(p.read_text())
        return TypeAdapter(dict[Precision, Tolerance]).validate_python(data)
    except yaml.YAMLError as e:
        raise BenchError(f"{p}: malformed YAML: {e}") from None
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(x) for x in first["loc"])
        raise BenchError(f"{p}: {loc}: {first['msg']} (expected e.g. fp16: {{atol: 0.01, rtol: 0.01, min_cosine: 0.999}})") from None


@dataclass(frozen=True)
class GateResult:
    rows: pd.DataFrame  # one per planned cell: key, verdict (pass, drift, unvalidated, missing, <status>), figures
    allow_missing: bool

    @property
    def drifted(self) -> pd.DataFrame:
        return self.rows[self.rows["verdict"] == "drift"]

    @property
    def missing(self) -> pd.DataFrame:
        return self.rows[~self.rows["verdict"].isin(["pass", "drift"])]

    @property
    def exit_code(self) -> int:
        return 1 if len(self.drifted) or (not self.allow_missing and len(self.missing)) else 0


def planned_keys(run: StoredRun, strict: bool = True) -> list[tuple]:
    """The cells the run's config planned, then any other cell its table holds. When the stored
    config cannot be planned again (a plugin backend not loaded, a renamed zoo entry), the cells
    the run lacks cannot be named: that is bad input (a verdict never fails open), unless not
    `strict`, where the table's own cells are all there is to judge."""
    from bench.config import Config

    stored = [cell_key(r) for _, r in run.cells.iterrows()]
    if not run.meta.get("config"):  # a run that states no grid (assembled by hand, say): its table is all it claims
        return list(dict.fromkeys(stored))
    try:
        quantized = quantized_models_of(run.meta, (r for _, r in run.cells.iterrows()))
        planned = [cell_key(c) for c in Config.model_validate(run.meta["config"]).grid(quantized)]
    except Exception as e:
        if strict:
            first = str(e).strip().splitlines()
            raise BenchError(f"{run.run_dir / 'meta.json'}: the run's grid cannot be planned again ({type(e).__name__}: "
                             f"{' '.join(first[:3])}), so the cells it lacks cannot be named; load what it used "
                             "(BENCH_PLUGINS) or pass --allow-missing to judge only the cells its table holds") from None
        planned = []
    return list(dict.fromkeys(planned + stored))


def require_complete(run: StoredRun, allowed: bool) -> None:
    status = run.meta.get("status")
    if status != "complete" and not allowed:
        raise BenchError(f"{run.run_dir / 'meta.json'}: the run is {status!r} with {len(run.cells)} of "
                         f"{len(planned_keys(run, strict=False))} planned cells; finish it (bench run CONFIG --resume {run.run_id}) "
                         "or pass --allow-incomplete to judge what is there")


def _stored_output_tolerances(run: StoredRun, r: Any) -> dict[str, Tolerance]:
    """The run's own per-output tolerances for this cell's model and precision: more specific than
    a precision-wide tolerance, they still apply when the gate is given other tolerances."""
    spec = next((m for m in run.meta.get("config", {}).get("models", []) if m.get("name") == r["model"]), {})
    precision = judged_as(r["precision"])
    return {name: Tolerance.model_validate(by_precision[precision])
            for name, by_precision in (spec.get("output_tolerances") or {}).items() if precision in by_precision}


def _rejudge(run: StoredRun, r: Any, tol: Tolerance) -> dict[str, Any]:
    """Judge a cell's stored outputs against stored reference outputs under other tolerances."""
    cand_path = run.run_dir / "outputs" / f"{cell_slug(r)}.npz"
    goldens_dir = run.meta.get("config", {}).get("goldens")
    ref_dir = Path(goldens_dir) if goldens_dir else run.run_dir / "references"
    ref_path = ref_dir / goldens.file_name(r["model"], int(r["batch_size"]))
    for p in (cand_path, ref_path):
        if not p.is_file():
            raise BenchError(f"{p}: stored outputs missing, so this run can't be judged under other tolerances")
    ref, cand = goldens.load(ref_path), goldens.load(cand_path)
    d = compare(ref.run_results("reference"), cand.run_results("candidate"), tol, per_output=_stored_output_tolerances(run, r))
    return {"max_abs_err": d.max_abs_err, "max_rel_err": d.max_rel_err, "cosine": d.cosine,
            "accuracy_ok": d.accuracy_ok, "accuracy_note": d.reason}


def gate(run: StoredRun, tolerances: dict[str, Tolerance] | None = None, allow_missing: bool = False,
         allow_incomplete: bool = False) -> GateResult:
    """Judge every planned cell: stored verdicts under the run's own tolerances, or re-judged under
    `tolerances` (per precision; they replace the run's config-wide and per-model ones, while its
    per-output tolerances still apply: they say each output's units). A planned cell absent from the
    table is `missing`; with anything but pass or drift the gate fails unless `allow_missing`. A run that is not complete is refused unless `allow_incomplete`."""
    require_complete(run, allow_incomplete)
    out = []
    by_key = {cell_key(r): r for _, r in run.cells.iterrows()}
    for key in planned_keys(run, strict=not allow_missing):
        if key not in by_key:
            out.append({**dict(zip(CELL_COLUMNS, key)), "variant": None, "status": None, "verdict": "missing",
                        "note": f"planned, absent from {run.run_dir.name}'s table (run {run.meta.get('status')})"})
            continue
        r = by_key[key]
        row = {k: r[k] for k in KEY}
        row.update(status=r["status"], max_abs_err=r["max_abs_err"], max_rel_err=r["max_rel_err"], cosine=r["cosine"],
                   atol=r["atol"], rtol=r["rtol"], min_cosine=r["min_cosine"], note=r.get("accuracy_note"))
        validated = bool(r["validated"]) if pd.notna(r["validated"]) else False
        if r["status"] != "ok":
            row.update(verdict=r["status"], note=r["error"])
        elif not validated:
            row.update(verdict="unvalidated")
        else:
            ok = bool(r["accuracy_ok"])
            precision = judged_as(r["precision"])
            if tolerances is not None and precision in tolerances:
                tol = tolerances[precision]
                judged = _rejudge(run, r, tol)
                ok = judged.pop("accuracy_ok")
                row.update(judged, atol=tol.atol, rtol=tol.rtol, min_cosine=tol.min_cosine, note=judged.pop("accuracy_note"))
            row["verdict"] = "pass" if ok else "drift"
        out.append(row)
    return GateResult(pd.DataFrame(out), allow_missing)


# --- comparing two runs' latencies ----------------------------------------------------------------

ENV_KEYS = ("cpu_model", "cpu_count", "cpu_affinity", "threads", "os", "python")


def environment_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    ea, eb = a.get("environment", {}), b.get("environment", {})
    diffs = [f"{k}: {ea.get(k)!r} vs {eb.get(k)!r}" for k in ENV_KEYS if ea.get(k) != eb.get(k)]
    la, lb = ea.get("libraries", {}), eb.get("libraries", {})
    diffs += [f"{k}: {la.get(k, 'absent')} vs {lb.get(k, 'absent')}" for k in sorted(set(la) | set(lb)) if la.get(k) != lb.get(k)]
    return diffs


def ratio_ci(a: Sequence[np.ndarray], b: Sequence[np.ndarray], confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """95% interval of median(b) / median(a) - 1: each median bootstrapped hierarchically (processes
    resampled, then samples within each; see bench.timing), the log ratio's standard error taken
    with Student's t for the processes' pooled degrees of freedom. Seeded: the same runs give the
    same interval."""
    if confidence != 0.95:
        raise ValueError("only 95% intervals are implemented")
    ma = hierarchical_medians(a, seed=seed)
    mb = hierarchical_medians(b, seed=seed + 1)
    center = math.log(float(np.median(np.concatenate(b))) / float(np.median(np.concatenate(a))))
    ka, kb = sum(1 for p in a if len(p)), sum(1 for p in b if len(p))
    # processes on both sides: pooled degrees of freedom; one side a single process: that side's noise only
    lo, hi = t_interval(center, np.log(mb / ma), min(ka, kb), max(ka + kb - 2, 1))
    return math.expm1(lo), math.expm1(hi)


def verdict(ci_low: float, ci_high: float, threshold: float) -> str:
    """faster / slower when the whole interval is beyond the noise threshold, no change when it lies
    within it, inconclusive when it straddles the threshold."""
    if ci_low > threshold:
        return "slower"
    if ci_high < -threshold:
        return "faster"
    if -threshold <= ci_low and ci_high <= threshold:
        return "no change"
    return "inconclusive"


def _by_process(samples: pd.DataFrame) -> dict[tuple, list[np.ndarray]]:
    """Latencies per cell, one array per worker process (runs stored before processes were kept: one)."""
    proc = samples["process"] if "process" in samples.columns else pd.Series(0, index=samples.index)
    out: dict[tuple, list[np.ndarray]] = {}
    for key, g in samples.assign(process=proc).groupby(CELL_COLUMNS):
        out[cell_key(dict(zip(CELL_COLUMNS, key)))] = [p["latency_ms"].to_numpy() for _, p in g.groupby("process")]
    return out


def _throughput(scenario: str) -> bool:
    """A scenario whose figure is a throughput (higher is better; its spec says `throughput`):
    compared as time per sample, 1/throughput, so that the change, its interval and the verdict
    read as for latency (positive: slower). Unknown names (a plugin's, not loaded) read as latency."""
    return bool(scenario_flag(scenario, "throughput"))
COMPARE_COLUMNS = [*CELL_COLUMNS, "metric", "p50_a_ms", "p50_b_ms", "qps_a", "qps_b", "change", "ci_low", "ci_high", "verdict",
                   "drift_sd", "note"]


def _throughputs(r: Any) -> list[np.ndarray]:
    """Per process, ms per sample (1000 / samples per second) of a throughput cell."""
    import json

    try:
        qps = json.loads(r["process_qps"]) if isinstance(r.get("process_qps"), str) else []
    except ValueError:
        qps = []
    return [np.array([1e3 / q]) for q in qps if q]


def _why_absent(run: StoredRun, name: str, key: tuple, rows: dict[tuple, Any], timed: dict[tuple, Any]) -> str | None:
    if key in timed:
        return None
    if key not in rows:
        return f"{name}: not in the run (run {run.meta.get('status')})"
    r = rows[key]
    if r["status"] != "ok":
        return f"{name}: {r['status']}" + (f" ({str(r['error'])[:120]})" if pd.notna(r.get("error")) and r.get("error") else "")
    return f"{name}: no samples"


def compare_runs(a: StoredRun, b: StoredRun, threshold: float = 0.05, strict: bool = True, drift: Drift | None = None) -> pd.DataFrame:
    """One row per cell planned in either run: medians, change, its 95% interval and the verdict for
    cells timed in both; verdict `missing`, with the reason, for a cell missing, unfinished or not
    `ok` in either. No cell timed in both runs is bad input; so is a run whose grid cannot be
    planned again, unless not `strict` (planned_keys). With `drift` (bench.history), each interval
    is widened to cover the run-to-run drift seen in repeated runs (with_drift), and the note says
    how, or that there was no history to estimate it from."""
    sa, sb = a.samples, b.samples
    ga = _by_process(sa) if not sa.empty else {}
    gb = _by_process(sb) if not sb.empty else {}
    ra = {cell_key(r): r for _, r in a.cells.iterrows()}
    rb = {cell_key(r): r for _, r in b.cells.iterrows()}
    ta = _timed(ga, ra)
    tb = _timed(gb, rb)
    if not set(ta) & set(tb):
        raise BenchError(f"no cell was timed in both runs ({a.run_dir} has {len(ta)} timed cells, {b.run_dir} has {len(tb)}, "
                         f"{len(set(ra) & set(rb))} in common by name): nothing to compare")
    rows = []
    for key in dict.fromkeys(planned_keys(a, strict) + planned_keys(b, strict)):
        why = [w for w in (_why_absent(a, "A", key, ra, ta), _why_absent(b, "B", key, rb, tb)) if w]
        if why:
            rows.append({**dict(zip(CELL_COLUMNS, key)), "verdict": "missing", "note": "; ".join(why)})
            continue
        x, y = ta[key], tb[key]
        lo, hi = ratio_ci(x, y)
        pa, pb = float(np.median(np.concatenate(x))), float(np.median(np.concatenate(y)))
        notes = [_machines_differ(ra[key], rb[key])]
        sd = None
        if drift is not None:
            lo, hi, sd = with_drift(pb / pa - 1, lo, hi, drift.sd(key))
            notes.append(drift.note(key))
        row = {**dict(zip(CELL_COLUMNS, key)), "change": pb / pa - 1, "ci_low": lo, "ci_high": hi, "drift_sd": sd,
               "verdict": verdict(lo, hi, threshold), "note": "; ".join(n for n in notes if n)}
        if _throughput(key[4]):
            row.update(metric="ms per sample (1/throughput)", qps_a=float(ra[key]["achieved_qps"]), qps_b=float(rb[key]["achieved_qps"]))
        else:
            row.update(metric="latency p50" + (" under load" if key[4] != DEFAULT_SCENARIO else ""), p50_a_ms=pa, p50_b_ms=pb)
        rows.append(row)
    return pd.DataFrame(rows, columns=COMPARE_COLUMNS)


def with_drift(change: float, lo: float, hi: float, sd: tuple[float, int] | None) -> tuple[float, float, float | None]:
    """The interval widened to cover run-to-run drift: each run's log figure varies with standard
    deviation `sd` (from history, with its degrees of freedom) whatever the run's own processes say,
    so the difference of two runs varies with sqrt(2) sd; the interval is the wider of the
    within-run one and change +- t x sqrt(2) x sd."""
    if sd is None:
        return lo, hi, None
    s, df = sd
    center, half = math.log1p(change), t975(df) * math.sqrt(2) * s
    return min(lo, math.expm1(center - half)), max(hi, math.expm1(center + half)), math.expm1(s)


def _machines_differ(a: Any, b: Any) -> str:
    """A note when a cell ran on machines of different environment fingerprints (fleet runs)."""
    fa, fb = a.get("env_fingerprint"), b.get("env_fingerprint")
    if isinstance(fa, str) and isinstance(fb, str) and fa != fb:
        return f"WARNING: ran on different machines (environment {fa} vs {fb}): {_env_diff(a, b)}"
    return ""


def _env_diff(a: Any, b: Any) -> str:
    import json

    try:
        ea, eb = json.loads(a["host_environment"]), json.loads(b["host_environment"])
    except (TypeError, ValueError, KeyError):
        return "details unknown"
    return "; ".join(environment_differences({"environment": ea}, {"environment": eb})[:3]) or "details unknown"


def fingerprint_differences(table: pd.DataFrame) -> list[str]:
    """The compare table's notes of cells that ran on machines of different environments."""
    return [n for n in table["note"].dropna() if str(n).startswith("WARNING: ran on different machines")]


def _timed(samples: dict[tuple, list[np.ndarray]], rows: dict[tuple, Any]) -> dict[tuple, list[np.ndarray]]:
    """The cells of a run that were timed and are ok: latency samples per process, or for a
    throughput scenario each process's time per sample."""
    out = {k: v for k, v in samples.items() if k in rows and rows[k]["status"] == "ok" and not _throughput(k[4])}
    for k, r in rows.items():
        if _throughput(k[4]) and r["status"] == "ok" and _throughputs(r):
            out[k] = _throughputs(r)
    return out


def verdict_counts(table: pd.DataFrame) -> str:
    """One line: how many rows got each verdict."""
    return ", ".join(f"{v}: {n}" for v, n in sorted(table["verdict"].value_counts().to_dict().items()))


def parse_fraction(text: str) -> float:
    """'5%' or '0.05' -> 0.05."""
    t = text.strip()
    try:
        return float(t[:-1]) / 100 if t.endswith("%") else float(t)
    except ValueError:
        raise BenchError(f"{text!r} is not a percentage; write e.g. 5% or 0.05") from None
