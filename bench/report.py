"""Plots and a Markdown report, built from a stored run directory alone (no re-run needed)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.results import StoredRun, load_run

PLOTS = {
    "latency": "latency_vs_batch.png",
    "throughput": "throughput_vs_batch.png",
    "speedup": "speedup_heatmap.png",
    "accuracy": "accuracy_drift.png",
}


def _series_label(row: pd.Series) -> str:
    return f"{row['backend']} {row['precision']} ({row['variant']})"


def _ok(cells: pd.DataFrame) -> pd.DataFrame:
    ok = cells[(cells["status"] == "ok") & cells["p50_ms"].notna()].copy()
    ok["series"] = ok.apply(_series_label, axis=1)
    return ok


def _unvalidated(df: pd.DataFrame) -> pd.Series:
    """Rows whose latency must be shown marked: validation failed or never happened."""
    return ~(df["accuracy_ok"].fillna(False).astype(bool))


def _per_model_lines(cells: pd.DataFrame, column: str, ylabel: str, title: str, path: Path, logy: bool) -> None:
    import matplotlib.pyplot as plt

    ok = _ok(cells)
    models = list(dict.fromkeys(cells["model"]))
    fig, axes = plt.subplots(1, len(models), figsize=(5.2 * len(models), 4.2), squeeze=False)
    for ax, model in zip(axes[0], models):
        sub = ok[ok["model"] == model]
        for series, g in sub.groupby("series", sort=True):
            g = g.sort_values("batch_size")
            line = ax.plot(g["batch_size"], g[column], marker="o", label=series)[0]
            if column == "p50_ms":
                ax.fill_between(g["batch_size"], g["min_ms"], g["p90_ms"], color=line.get_color(), alpha=0.15)
            shaky = g[g["unstable"].fillna(False).astype(bool)]
            if len(shaky):
                ax.scatter(shaky["batch_size"], shaky[column], marker="o", s=160, facecolors="none", edgecolors="black",
                           zorder=6, label="unstable timing" if series == sub["series"].iloc[0] else None)
            bad = g[_unvalidated(g)]
            if len(bad):
                ax.scatter(bad["batch_size"], bad[column], marker="x", s=120, color="red", zorder=5,
                           label="not validated / drifted" if series == sub["series"].iloc[0] else None)
        ax.set_title(model)
        ax.set_xlabel("batch size")
        ax.set_ylabel(ylabel)
        ax.set_xscale("log", base=2)
        if logy:
            ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        if len(sub):
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no timed cells", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def speedup_matrix(cells: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Baseline latency / cell latency (p50), rows model x batch, columns backend series.

    `baseline` is a series label; >1 means faster than the baseline."""
    ok = _ok(cells)
    table = ok.pivot_table(index=["model", "batch_size"], columns="series", values="p50_ms", aggfunc="first")
    if baseline not in table.columns:
        return pd.DataFrame()
    return table.rdiv(table[baseline], axis=0)


def _speedup_plot(cells: pd.DataFrame, baseline: str, path: Path) -> None:
    import matplotlib.pyplot as plt

    m = speedup_matrix(cells, baseline)
    fig, ax = plt.subplots(figsize=(2.2 + 1.8 * max(1, m.shape[1]), 1.6 + 0.45 * max(1, m.shape[0])))
    if m.empty:
        ax.text(0.5, 0.5, f"no timed cells for the baseline {baseline}", ha="center", va="center")
        ax.axis("off")
    else:
        data = np.log2(m.to_numpy(dtype=float))
        lim = max(1.0, float(np.nanmax(np.abs(data)))) if np.isfinite(data).any() else 1.0
        im = ax.imshow(data, cmap="RdYlGn", vmin=-lim, vmax=lim, aspect="auto")
        ax.set_xticks(range(m.shape[1]), m.columns, rotation=20, ha="right", fontsize=8)
        ax.set_yticks(range(m.shape[0]), [f"{mdl} b{bs}" for mdl, bs in m.index], fontsize=8)
        ok = _ok(cells)
        ok["marked"] = _unvalidated(ok)
        marked = ok.pivot_table(index=["model", "batch_size"], columns="series", values="marked", aggfunc="first")
        marked = marked.reindex(index=m.index, columns=m.columns)
        for (i, j), v in np.ndenumerate(m.to_numpy(dtype=float)):
            if np.isfinite(v):
                flag = " *" if marked.iat[i, j] is True or marked.iat[i, j] == 1 else ""
                ax.text(j, i, f"{v:.3g}x{flag}", ha="center", va="center", fontsize=8)
        fig.colorbar(im, ax=ax, label="log2 speedup")
        ax.set_title(f"speedup over {baseline} (p50 latency ratio; * outputs drifted or not validated)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _accuracy_plot(cells: pd.DataFrame, path: Path) -> None:
    import matplotlib.pyplot as plt

    v = cells[cells["validated"].fillna(False).astype(bool)].copy()
    fig, ax = plt.subplots(figsize=(8, 1.4 + 0.32 * max(1, len(v))))
    if v.empty:
        ax.text(0.5, 0.5, "no validated cells", ha="center", va="center")
        ax.axis("off")
    else:
        labels = [f"{r.model} {r.backend} {r.precision} b{r.batch_size}" for r in v.itertuples()]
        # A perfect match plots at a floor instead of vanishing off a log axis.
        err = v["max_abs_err"].astype(float).clip(lower=1e-12).fillna(1e-12)
        colors = ["tab:green" if ok else "tab:red" for ok in v["accuracy_ok"].fillna(False).astype(bool)]
        y = np.arange(len(v))
        ax.barh(y, err, color=colors)
        ax.scatter(v["atol"].astype(float), y, marker="|", s=200, color="black", label="atol")
        ax.set_yticks(y, labels, fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel("max |output - reference| (green: within tolerance, red: drifted)")
        ax.legend(fontsize=7)
        ax.invert_yaxis()
    ax.set_title("accuracy drift against the reference")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt(v: Any, spec: str = ".3g") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
        return "–"
    return format(v, spec) if isinstance(v, (int, float, np.floating, np.integer)) else str(v)


def accuracy_mark(row: Any) -> str:
    validated, ok = row["validated"], row["accuracy_ok"]
    if pd.isna(validated) or not bool(validated) or pd.isna(ok):
        return "not validated"
    return "ok" if bool(ok) else "DRIFTED"


def summary_table(cells: pd.DataFrame) -> list[list[str]]:
    """Rows of strings for the Markdown report and the CLI: one per cell."""
    out = []
    for _, r in cells.iterrows():
        timed = r["status"] == "ok" and pd.notna(r["p50_ms"])
        out.append([
            str(r["model"]), str(r["backend"]), str(r["precision"]), str(r["batch_size"]), _fmt(r["variant"]),
            str(r["status"]),
            _fmt(r["p50_ms"], ".4g") if timed else "–",
            f"{_fmt(r['p50_ci_low_ms'], '.4g')} – {_fmt(r['p50_ci_high_ms'], '.4g')}" if timed else "–",
            f"{_fmt(r['mean_ms'], '.4g')} ± {_fmt(r['std_ms'], '.2g')}" if timed else "–",
            _fmt(r["throughput_ips"], ".4g") if timed else "–",
            _fmt(r.get("achieved_gflops"), ".3g") if timed else "–",
            _fmt(r.get("pct_of_peak"), ".2g") if timed else "–",
            _fmt(r["max_abs_err"], ".2e"),
            accuracy_mark(r) if r["status"] == "ok" else "–",
            stability_mark(r) if timed else "–",
        ])
    return out


SUMMARY_HEADER = ["model", "backend", "precision", "batch", "variant", "status", "p50 ms", "p50 95% CI",
                  "mean ± std ms", "items/s", "GFLOP/s", "% peak", "max abs err", "accuracy", "stability"]


def stability_mark(row: Any) -> str:
    return "UNSTABLE" if pd.notna(row["unstable"]) and bool(row["unstable"]) else "stable"


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _markdown(run: StoredRun, baseline: str, tuning_plot: bool = False) -> str:
    cells, meta = run.cells, run.meta
    env = meta.get("environment", {})
    cfg = meta.get("config", {})
    parts = [
        f"# Benchmark report: {cfg.get('name', '?')}",
        "",
        f"Run `{run.run_id}`, {meta.get('started_at', '?')} to {meta.get('finished_at', '?')}, status **{meta.get('status', '?')}**.",
        f"Config `{meta.get('config_path')}` (sha256 `{str(meta.get('config_hash', ''))[:12]}`); reference "
        f"`{cfg.get('reference', {}).get('backend')}/{cfg.get('reference', {}).get('precision')}` on the same seeded inputs "
        f"(seed {cfg.get('seed')}, {cfg.get('validation', {}).get('iterations')} batches).",
        "",
        "## Results",
        "",
        _md_table(SUMMARY_HEADER, summary_table(cells)),
        "",
    ]
    notes = []
    variants = cells.dropna(subset=["variant"]).groupby("backend")["variant"].unique()
    for backend, vs in variants.items():
        for v in vs:
            if v == "untuned":
                notes.append(f"**{backend} rows are untuned** (`variant=untuned`): they measure {backend}'s "
                             "default code generation without schedule search, not what tuning would reach.")
            elif isinstance(v, str) and v.startswith("tuned (") and v.endswith(" tasks)"):
                notes.append(f"**{backend} rows `{v}` are partly untuned**: the model's other tasks have no tuned "
                             "schedule and run TVM's fallback code.")
    bad = cells[(cells["status"] == "ok") & _unvalidated(cells)]
    for _, r in bad.iterrows():
        why = r["accuracy_note"] if pd.notna(r["accuracy_note"]) else "not validated"
        notes.append(f"{r['model']} {r['backend']} {r['precision']} b{r['batch_size']}: latency published but outputs "
                     f"**{accuracy_mark(r)}**: {why}")
    for _, r in cells[cells["unstable"].fillna(False).astype(bool)].iterrows():
        notes.append(f"{r['model']} {r['backend']} {r['precision']} b{r['batch_size']}: timing **unstable**: {r['unstable_reason']}")
    for _, r in cells[cells["status"] != "ok"].iterrows():
        notes.append(f"{r['model']} {r['backend']} {r['precision']} b{r['batch_size']}: **{r['status']}**"
                     + (f" in {r['phase']}" if pd.notna(r.get("phase")) else "") + f": {r['error']}")
    if notes:
        parts += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    parts += [
        "## Plots",
        "",
        f"![latency]({PLOTS['latency']})",
        "",
        "Median latency per batch size; the band spans min to p90; red crosses mark cells whose outputs were not validated or drifted; black rings mark unstable timings.",
        "",
        f"![throughput]({PLOTS['throughput']})",
        "",
        f"![speedup]({PLOTS['speedup']})",
        "",
        f"Speedup relative to `{baseline}`, by median latency.",
        "",
        f"![accuracy]({PLOTS['accuracy']})",
        "",
    ] + ([f"![tuning]({TUNING_PLOT})", "", "Tuning: the tuner's estimate of the whole model (sum over tasks of weight × best "
          "measured latency) and the tasks covered, against trials spent.", ""] if tuning_plot else []) + [
        "## Environment",
        "",
        _md_table(["key", "value"], [
            ["CPU", _fmt(env.get("cpu_model"))], ["cores (affinity)", f"{env.get('cpu_count')} ({env.get('cpu_affinity')})"],
            ["threads", _fmt(env.get("threads"))], ["OS", _fmt(env.get("os"))], ["Python", _fmt(env.get("python"))],
            ["bench", f"{env.get('bench_version')} ({env.get('git_commit') or 'no git'})"],
            ["fp32 peak (theoretical)", f"{_fmt(env.get('cpu_peak', {}).get('fp32_peak_gflops'))} GFLOP/s: "
                                        f"{env.get('cpu_peak', {}).get('peak_basis', 'unknown')}"],
        ] + [[k, v] for k, v in sorted(env.get("libraries", {}).items())]),
        "",
        "Timing: " + ", ".join(f"{k}={v}" for k, v in cfg.get("timing", {}).items())
        + ". A monotonic nanosecond clock around the forward call only; raw samples in `samples.parquet`.",
        "",
    ]
    backends = meta.get("backends", {})
    if backends:
        parts += ["Backends: " + "; ".join(
            f"{n}: " + (", ".join(f"{k} {v}" for k, v in b.get("versions", {}).items()) if b.get("usable") else f"unavailable ({b.get('reason')})")
            for n, b in backends.items()), ""]
    return "\n".join(parts)


TUNING_PLOT = "tuning_curve.png"


def _tuning_curves(cells: pd.DataFrame) -> list[tuple[str, list[dict[str, Any]]]]:
    import json

    if "tuning_curve" not in cells.columns:
        return []
    out = []
    for _, r in cells[cells["tuning_curve"].notna()].iterrows():
        try:
            points = json.loads(r["tuning_curve"])
        except (TypeError, ValueError):
            continue
        if points:
            out.append((f"{r['model']} {r['backend']} {r['precision']} b{r['batch_size']}", points))
    return out


def _tuning_plot(curves: list[tuple[str, list[dict[str, Any]]]], path: Path) -> None:
    """The tuner's latency estimate (sum over the tasks tuned so far of weight x best measured
    latency; the whole model once every task is covered) and the tasks covered, against trials."""
    import matplotlib.pyplot as plt

    fig, (ax, ax_tasks) = plt.subplots(1, 2, figsize=(11, 4))
    for label, points in curves:
        est = [(p["trials"], p.get("tuned_ms", p.get("estimated_ms"))) for p in points
               if p.get("tuned_ms", p.get("estimated_ms")) is not None]
        if est:
            ax.plot(*zip(*est), marker=".", label=label)
        ax_tasks.plot([p["trials"] for p in points], [p["tuned_tasks"] for p in points], marker=".", label=label)
    ax.set(xlabel="trials spent", ylabel="estimated ms (sum over tuned tasks)", title="Tuning curve")
    ax_tasks.set(xlabel="trials spent", ylabel="tasks with a tuned schedule", title="Coverage")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def build_report(run_dir: str | Path, reports_dir: str | Path) -> Path:
    """Write reports/<run_id>/ (plots and report.md) from results/<run_id>/ alone."""
    import matplotlib

    matplotlib.use("Agg")
    run = load_run(run_dir)
    out = Path(reports_dir) / run.run_id
    out.mkdir(parents=True, exist_ok=True)
    cells = run.cells
    ref = run.meta.get("config", {}).get("reference", {})
    ok = _ok(cells)
    ref_rows = ok[(ok["backend"] == ref.get("backend")) & (ok["precision"] == ref.get("precision"))]
    baseline = ref_rows["series"].iloc[0] if len(ref_rows) else (ok["series"].iloc[0] if len(ok) else "?")
    _per_model_lines(cells, "p50_ms", "latency p50 (ms, log)", "Latency vs batch size", out / PLOTS["latency"], logy=True)
    _per_model_lines(cells, "throughput_ips", "throughput (items/s, log)", "Throughput vs batch size", out / PLOTS["throughput"], logy=True)
    _speedup_plot(cells, baseline, out / PLOTS["speedup"])
    _accuracy_plot(cells, out / PLOTS["accuracy"])
    curves = _tuning_curves(cells)
    if curves:
        _tuning_plot(curves, out / TUNING_PLOT)
    (out / "report.md").write_text(_markdown(run, baseline, bool(curves)))
    return out
