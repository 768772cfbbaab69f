"""CI verdicts on stored runs: the accuracy gate (drift against tolerances) and the latency comparison
of two runs (a change with its confidence interval and a verdict), each as an exit code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from pydantic import TypeAdapter, ValidationError

from bench import goldens
from bench.config import Precision, Tolerance
from bench.errors import BenchError
from bench.results import KEY, StoredRun
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
    rows: pd.DataFrame  # one per cell: key, verdict (pass, drift, unvalidated, <status>), figures
    fail_on_missing: bool

    @property
    def drifted(self) -> pd.DataFrame:
        return self.rows[self.rows["verdict"] == "drift"]

    @property
    def missing(self) -> pd.DataFrame:
        return self.rows[~self.rows["verdict"].isin(["pass", "drift"])]

    @property
    def exit_code(self) -> int:
        return 1 if len(self.drifted) or (self.fail_on_missing and len(self.missing)) else 0


def _slug(r: Any) -> str:
    return f"{r['model']}-{r['backend']}-{r['precision']}-b{r['batch_size']}"


def _rejudge(run: StoredRun, r: Any, tol: Tolerance) -> dict[str, Any]:
    """Judge a cell's stored outputs against stored reference outputs under other tolerances."""
    cand_path = run.run_dir / "outputs" / f"{_slug(r)}.npz"
    goldens_dir = run.meta.get("config", {}).get("goldens")
    ref_dir = Path(goldens_dir) if goldens_dir else run.run_dir / "references"
    ref_path = ref_dir / goldens.file_name(r["model"], int(r["batch_size"]))
    for p in (cand_path, ref_path):
        if not p.is_file():
            raise BenchError(f"{p}: stored outputs missing, so this run can't be judged under other tolerances")
    ref, cand = goldens.load(ref_path), goldens.load(cand_path)
    d = compare(ref.run_results("reference"), cand.run_results("candidate"), tol)
    return {"max_abs_err": d.max_abs_err, "max_rel_err": d.max_rel_err, "cosine": d.cosine,
            "accuracy_ok": d.accuracy_ok, "accuracy_note": d.reason}


def gate(run: StoredRun, tolerances: dict[str, Tolerance] | None = None, fail_on_missing: bool = False) -> GateResult:
    """Judge every cell: stored verdicts under the run's own tolerances, or re-judged under `tolerances`."""
    out = []
    for _, r in run.cells.iterrows():
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
            if tolerances is not None and r["precision"] in tolerances:
                tol = tolerances[r["precision"]]
                judged = _rejudge(run, r, tol)
                ok = judged.pop("accuracy_ok")
                row.update(judged, atol=tol.atol, rtol=tol.rtol, min_cosine=tol.min_cosine, note=judged.pop("accuracy_note"))
            row["verdict"] = "pass" if ok else "drift"
        out.append(row)
    return GateResult(pd.DataFrame(out), fail_on_missing)


# --- comparing two runs' latencies ----------------------------------------------------------------

ENV_KEYS = ("cpu_model", "cpu_count", "cpu_affinity", "threads", "os", "python")


def environment_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    ea, eb = a.get("environment", {}), b.get("environment", {})
    diffs = [f"{k}: {ea.get(k)!r} vs {eb.get(k)!r}" for k in ENV_KEYS if ea.get(k) != eb.get(k)]
    la, lb = ea.get("libraries", {}), eb.get("libraries", {})
    diffs += [f"{k}: {la.get(k, 'absent')} vs {lb.get(k, 'absent')}" for k in sorted(set(la) | set(lb)) if la.get(k) != lb.get(k)]
    return diffs


def ratio_ci(a_ms: np.ndarray, b_ms: np.ndarray, confidence: float = 0.95, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Bootstrap percentile interval of median(b) / median(a) - 1 (seeded: the same inputs give the same interval)."""
    rng = np.random.default_rng(seed)
    ratios = []
    chunk = max(1, 2_000_000 // max(len(a_ms), len(b_ms)))  # bound the memory of one resampling batch
    done = 0
    while done < resamples:
        k = min(chunk, resamples - done)
        ma = np.median(a_ms[rng.integers(0, len(a_ms), size=(k, len(a_ms)))], axis=1)
        mb = np.median(b_ms[rng.integers(0, len(b_ms), size=(k, len(b_ms)))], axis=1)
        ratios.append(mb / ma - 1)
        done += k
    r = np.concatenate(ratios)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(r, [alpha, 1 - alpha])
    return float(lo), float(hi)


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


def compare_runs(a: StoredRun, b: StoredRun, threshold: float = 0.05) -> pd.DataFrame:
    """One row per cell timed in both runs: medians, change, its 95% interval and the verdict."""
    sa, sb = a.samples, b.samples
    if sa.empty or sb.empty:
        raise BenchError("both runs need raw samples (samples.parquet) to be compared")
    ga = {k: g["latency_ms"].to_numpy() for k, g in sa.groupby(KEY[:4])}
    gb = {k: g["latency_ms"].to_numpy() for k, g in sb.groupby(KEY[:4])}
    rows = []
    for key in sorted(set(ga) & set(gb), key=str):
        x, y = ga[key], gb[key]
        lo, hi = ratio_ci(x, y)
        pa, pb = float(np.median(x)), float(np.median(y))
        rows.append({**dict(zip(KEY[:4], key)), "p50_a_ms": pa, "p50_b_ms": pb, "change": pb / pa - 1,
                     "ci_low": lo, "ci_high": hi, "verdict": verdict(lo, hi, threshold)})
    return pd.DataFrame(rows, columns=[*KEY[:4], "p50_a_ms", "p50_b_ms", "change", "ci_low", "ci_high", "verdict"])


def parse_fraction(text: str) -> float:
    """'5%' or '0.05' -> 0.05."""
    t = text.strip()
    try:
        return float(t[:-1]) / 100 if t.endswith("%") else float(t)
    except ValueError:
        raise BenchError(f"{text!r} is not a percentage; write e.g. 5% or 0.05") from None
