"""Plots and a Markdown report, built from a stored run directory alone (no re-run needed)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from bench import atomic
from bench.config import Cell
from bench.registry import scenario_flag
from bench.report_layers import md_table as _md_table
from bench.results import StoredRun, cell_key, load_run

PLOTS = {
    "latency": "latency_vs_batch.png",
    "throughput": "throughput_vs_batch.png",
    "speedup": "speedup_heatmap.png",
    "accuracy": "accuracy_drift.png",
    "latency_throughput": "latency_vs_throughput.png",
    "max_qps": "max_qps.png",
}


def label(row: Any) -> str:
    """A row's cell, as the runner names it (model backend precision bN [scenario rate xN streams])."""
    return Cell(*cell_key(row)).label


def _spec_flag(flag: str) -> Callable[[Any], bool]:
    """A row's scenario's spec flag, for pandas' map (bench.registry.scenario_flag)."""
    return lambda name: bool(scenario_flag(name, flag))


def single_stream(cells: pd.DataFrame) -> pd.DataFrame:
    """Rows timed by bench's own loop (the latency tables)."""
    return cells[~cells["scenario"].map(_spec_flag("loadgen"))]


def under_load(cells: pd.DataFrame) -> pd.DataFrame:
    """Rows of the LoadGen scenarios (the load tables and plots)."""
    return cells[cells["scenario"].map(_spec_flag("loadgen"))]


def _series_label(row: pd.Series) -> str:
    return f"{row['backend']} {row['precision']} ({row['variant']})"


def _ok(cells: pd.DataFrame) -> pd.DataFrame:
    """Single-stream cells timed: the latency and throughput-vs-batch plots and the speedups."""
    cells = single_stream(cells)
    ok = cells[(cells["status"] == "ok") & cells["p50_ms"].notna()].copy()
    ok["series"] = ok.apply(_series_label, axis=1)
    return ok


def _unvalidated(df: pd.DataFrame) -> pd.Series:
    """Rows whose latency must be shown marked: validation failed or never happened."""
    return ~(df["accuracy_ok"].fillna(False).astype(bool))


def _per_model_lines(cells: pd.DataFrame, column: str, ylabel: str, title: str, path: Path, logy: bool) -> None:
    import matplotlib.pyplot as plt

    ok = _ok(cells)
    models = list(dict.fromkeys(single_stream(cells)["model"]))
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
        batches = sorted({int(b) for b in sub["batch_size"]}) if len(sub) else []
        if batches:  # the batch sizes themselves (1, 4, 16), not powers of two (2^0, 2^2)
            ax.set_xticks(batches, [str(b) for b in batches])
            ax.minorticks_off()
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
        ax.set_title(f"speedup over {baseline}\n(p50 latency ratio; * outputs drifted or not validated)", fontsize=9, wrap=True)
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
        v = v.drop_duplicates(subset=["model", "backend", "precision", "batch_size"])  # validated once per variant
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


def fell_back(row: Any) -> bool:
    """A GPU cell some of whose nodes ran on the CPU (bench.backends.ort: `cpu_fallback`)."""
    v = row.get("cpu_fallback") if hasattr(row, "get") else None
    return isinstance(v, str) and bool(v)


def summary_table(cells: pd.DataFrame) -> list[list[str]]:
    """Rows of strings for the Markdown report and the CLI: one per single-stream cell."""
    out = []
    for _, r in single_stream(cells).iterrows():
        timed = r["status"] == "ok" and pd.notna(r["p50_ms"])
        out.append([
            str(r["model"]), str(r["backend"]), str(r["precision"]), str(r["batch_size"]), _fmt(r["variant"]),
            str(r["status"]) + (" (CPU fallback)" if fell_back(r) else ""),
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


LOAD_HEADER = ["model", "backend", "precision", "batch", "scenario", "streams × threads", "target qps", "achieved qps",
               "p50 ms", "p99 ms", "bound ms", "LoadGen", "accuracy", "stability"]


def load_table(cells: pd.DataFrame) -> list[list[str]]:
    """Rows of strings, one per cell run under LoadGen (a scenario other than single_stream)."""
    out = []
    for _, r in under_load(cells).iterrows():
        ok = r["status"] == "ok"
        valid = r.get("loadgen_valid")
        verdict = "–" if not ok or pd.isna(valid) else ("VALID" if bool(valid) else "INVALID")
        out.append([
            str(r["model"]), str(r["backend"]), str(r["precision"]), str(r["batch_size"]),
            str(r["scenario"]) + (f" ({r['rate']})" if r.get("rate") else ""),
            f"{r['streams']} × {_fmt(r.get('threads_per_stream'), '.0f')}",
            _fmt(r.get("target_qps"), ".4g"), _fmt(r.get("achieved_qps"), ".4g") if ok else str(r["status"]),
            _fmt(r["p50_ms"], ".4g") if ok else "–", _fmt(r["p99_ms"], ".4g") if ok else "–",
            _fmt(r.get("latency_bound_ms"), ".4g"), verdict,
            accuracy_mark(r) if ok else "–", stability_mark(r) if ok else "–",
        ])
    return out


def _targets_table(cells: pd.DataFrame, targets: list[str]) -> tuple[list[str], list[list[str]]]:
    """(header, rows): one row per cell of the grid without its target, one column per target."""
    keys = ["model", "backend", "precision", "batch_size", "scenario", "streams", "rate"]
    by: dict[tuple, dict[str, str]] = {}
    for _, r in cells.iterrows():
        figure = r["achieved_qps"] if _spec_flag("loadgen")(r["scenario"]) else r["p50_ms"]
        text = _fmt(figure, ".4g") if r["status"] == "ok" else str(r["status"])
        host = f" ({r['host']})" if pd.notna(r.get("host")) and r.get("host") else ""
        by.setdefault(tuple(r[k] for k in keys), {})[r["target"]] = text + host
    rows = [[label(dict(zip(keys, k)))] + [v.get(t, "–") for t in targets] for k, v in by.items()]
    return ["cell"] + targets, rows


def stability_mark(row: Any) -> str:
    return "UNSTABLE" if pd.notna(row["unstable"]) and bool(row["unstable"]) else "stable"


def _markdown(run: StoredRun, baseline: str, tuning_plot: bool = False, extra: list[str] | None = None) -> str:
    cells, meta = run.cells, run.meta
    cfg = meta.get("config", {})
    parts = [
        f"# Benchmark report: {cfg.get('name', '?')}",
        "",
        f"Run `{run.run_id}`, {meta.get('started_at', '?')} to {meta.get('finished_at', '?')}, status **{meta.get('status', '?')}**.",
        f"Config `{meta.get('config_path')}` (sha256 `{str(meta.get('config_hash', ''))[:12]}`); reference "
        f"`{cfg.get('reference', {}).get('backend')}/{cfg.get('reference', {}).get('precision')}` on the same seeded inputs "
        f"(seed {cfg.get('seed')}, {cfg.get('validation', {}).get('iterations')} batches).",
        "",
    ]
    parts += _results_section(cells, cfg)
    notes = _notes(cells)
    if notes:
        parts += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    parts += _plots_section(cells, baseline, tuning_plot)
    parts += extra or []
    parts += _environment_section(meta)
    return "\n".join(parts)


def _results_section(cells: pd.DataFrame, cfg: dict[str, Any]) -> list[str]:
    parts = ["## Results", ""]
    if len(single_stream(cells)):
        parts += ["Single stream: one caller in a loop, one forward call at a time.", "",
                  _md_table(SUMMARY_HEADER, summary_table(cells)), ""]
    if len(under_load(cells)):
        lgc = cfg.get("loadgen", {})
        parts += ["Under load, measured by MLPerf LoadGen (`loadgen/` holds its logs per cell and process): "
                  f"minimum {lgc.get('min_duration_s')} s and {lgc.get('min_query_count')} queries per run; achieved qps is "
                  "completed samples per second; p50/p99 include queueing; each figure is the median of the cell's processes.", ""]
        for name, rows in under_load(cells).groupby("scenario", sort=False):
            parts += [f"### {name}", "", _md_table(LOAD_HEADER, load_table(rows)), ""]
    targets = list(dict.fromkeys(cells["target"]))
    if len(targets) > 1:
        parts += ["## Targets side by side", "", "Median latency (ms; under load: achieved samples/s) of each cell on each machine class.", "",
                  _md_table(*_targets_table(cells, targets)), ""]
    return parts


def _notes(cells: pd.DataFrame) -> list[str]:
    """What a reader must know before trusting a row: untuned variants, unvalidated or drifted
    outputs, unstable timing, CPU fallback, INVALID LoadGen runs, cells that did not finish."""
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
    for _, r in cells[(cells["status"] == "ok") & _unvalidated(cells)].iterrows():
        why = r["accuracy_note"] if pd.notna(r["accuracy_note"]) else "not validated"
        notes.append(f"{label(r)}: latency published but outputs **{accuracy_mark(r)}**: {why}")
    for _, r in cells[cells["unstable"].fillna(False).astype(bool)].iterrows():
        notes.append(f"{label(r)}: timing **unstable**: {r['unstable_reason']}")
    for _, r in cells[cells.apply(fell_back, axis=1)].iterrows() if len(cells) else []:
        notes.append(f"{label(r)}: **not all GPU work**: {r['cpu_fallback']}; its latency includes CPU nodes and copies")
    for _, r in under_load(cells).iterrows():
        if r["status"] == "ok" and pd.notna(r.get("loadgen_valid")) and not bool(r["loadgen_valid"]):
            notes.append(f"{label(r)}: LoadGen **INVALID**: {r.get('loadgen_reason')}")
    for _, r in cells[cells["status"] != "ok"].iterrows():
        notes.append(f"{label(r)}: **{r['status']}**"
                     + (f" in {r['phase']}" if pd.notna(r.get("phase")) else "") + f": {r['error']}")
    return notes


def _plots_section(cells: pd.DataFrame, baseline: str, tuning_plot: bool) -> list[str]:
    parts = ["## Plots", ""]
    if len(single_stream(cells)):
        parts += [
            f"![latency]({PLOTS['latency']})", "",
            "Median latency per batch size; the band spans min to p90; red crosses mark cells whose outputs were not validated or drifted; black rings mark unstable timings.",
            "", f"![throughput]({PLOTS['throughput']})", "",
            "Single-stream throughput: batch size / mean latency of one caller (the LoadGen offline rows measure it under load).",
            "", f"![speedup]({PLOTS['speedup']})", "", f"Speedup relative to `{baseline}`, by median latency.", "",
        ]
    if len(under_load(cells)):
        parts += [
            f"![latency vs throughput]({PLOTS['latency_throughput']})", "",
            "Latency against achieved throughput under LoadGen's bounded scenarios (server, max_qps; p50 solid, p99 dashed; one "
            "line per backend, precision and streams; hollow markers: INVALID runs), with the latency bound.",
            "", f"![max qps]({PLOTS['max_qps']})", "",
            "Capacity: the highest arrival rate whose server run was VALID under the bound (max_qps rows), beside offline throughput.",
            "",
        ]
    parts += [f"![accuracy]({PLOTS['accuracy']})", ""]
    if tuning_plot:
        parts += [f"![tuning]({TUNING_PLOT})", "", "Tuning: the tuner's estimate of the whole model (sum over tasks of weight × best "
                  "measured latency) and the tasks covered, against trials spent.", ""]
    return parts


def _environment_section(meta: dict[str, Any]) -> list[str]:
    env, cfg = meta.get("environment", {}), meta.get("config", {})
    parts = [
        "## Environment", "",
        _md_table(["key", "value"], [
            ["CPU", _fmt(env.get("cpu_model"))], ["cores (affinity)", f"{env.get('cpu_count')} ({env.get('cpu_affinity')})"],
            ["threads", _fmt(env.get("threads"))], ["OS", _fmt(env.get("os"))], ["Python", _fmt(env.get("python"))],
            ["bench", f"{env.get('bench_version')} ({env.get('git_commit') or 'no git'})"],
            ["fp32 peak (theoretical)", f"{_fmt(env.get('cpu_peak', {}).get('fp32_peak_gflops'))} GFLOP/s: "
                                        f"{env.get('cpu_peak', {}).get('peak_basis', 'unknown')}"],
        ] + [[k, v] for k, v in sorted(env.get("libraries", {}).items())]),
        "",
        "Timing: " + ", ".join(f"{k}={v}" for k, v in cfg.get("timing", {}).items())
        + ". Each row's clock and timed region are in its `timed_region` column; raw samples in `samples.parquet`.",
        "",
    ]
    backends = meta.get("backends", {})
    if backends:
        parts += ["Backends: " + "; ".join(
            f"{n}: " + (", ".join(f"{k} {v}" for k, v in b.get("versions", {}).items()) if b.get("usable") else f"unavailable ({b.get('reason')})")
            for n, b in backends.items()), ""]
    return parts


def _load_series(r: Any) -> str:
    return f"{r['backend']} {r['precision']} x{r['streams']}"


def _latency_throughput_plot(cells: pd.DataFrame, bound: float | None, path: Path) -> None:
    """Per model: p50 and p99 latency against achieved qps of the server (and max_qps) rows."""
    import matplotlib.pyplot as plt

    rows = under_load(cells)
    rows = rows[(rows["status"] == "ok") & rows["scenario"].map(_spec_flag("bounded")) & rows["achieved_qps"].notna()].copy()
    models = list(dict.fromkeys(under_load(cells)["model"]))
    fig, axes = plt.subplots(1, len(models), figsize=(5.6 * len(models), 4.4), squeeze=False)
    for ax, model in zip(axes[0], models):
        sub = rows[rows["model"] == model]
        if sub.empty:
            ax.text(0.5, 0.5, "no server runs", ha="center", va="center", transform=ax.transAxes)
        for series, g in sub.assign(series=sub.apply(_load_series, axis=1)).groupby("series", sort=True):
            g = g.sort_values("achieved_qps")
            line = ax.plot(g["achieved_qps"], g["p50_ms"], marker="o", label=f"{series} p50")[0]
            ax.plot(g["achieved_qps"], g["p99_ms"], marker="s", linestyle="--", color=line.get_color(), label=f"{series} p99")
            bad = g[~g["loadgen_valid"].fillna(False).astype(bool)]
            if len(bad):
                ax.scatter(bad["achieved_qps"], bad["p99_ms"], s=140, facecolors="none", edgecolors="red", zorder=6)
        if bound:
            ax.axhline(bound, color="black", linestyle=":", label=f"bound {bound:g} ms")
        ax.set(title=model, xlabel="achieved throughput (samples/s)", ylabel="latency (ms, log)")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        if len(sub) or bound:
            ax.legend(fontsize=7)
    fig.suptitle("Latency vs throughput (LoadGen server)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _max_qps_plot(cells: pd.DataFrame, path: Path) -> None:
    """Bars per model and backend/precision/streams: max VALID qps (max_qps rows) and offline throughput."""
    import matplotlib.pyplot as plt

    rows = under_load(cells)
    rows = rows[(rows["status"] == "ok") & rows["scenario"].map(_spec_flag("capacity_figure"))].copy()
    fig, ax = plt.subplots(figsize=(max(6.0, 1.0 + 0.7 * max(1, len(rows))), 4.4))
    if rows.empty:
        ax.text(0.5, 0.5, "no max_qps or offline rows", ha="center", va="center")
        ax.axis("off")
    else:
        rows["series"] = rows.apply(lambda r: f"{r['model']}\n{_load_series(r)}", axis=1)
        series = list(dict.fromkeys(rows["series"]))
        x = np.arange(len(series))
        kinds = list(dict.fromkeys(rows["scenario"]))
        width = 0.8 / len(kinds)
        for i, scenario in enumerate(kinds):
            figure = scenario_flag(scenario, "capacity_figure")
            sub = rows[rows["scenario"] == scenario].set_index("series")
            valid = sub["loadgen_valid"].fillna(False).astype(bool)
            heights = [float(sub.loc[s, figure]) if s in sub.index and valid.get(s, False) and pd.notna(sub.loc[s, figure]) else 0.0
                       for s in series]
            bars = ax.bar(x + (i - (len(kinds) - 1) / 2) * width, heights, width=width,
                          label=f"{scenario} ({figure}, VALID)")
            for b, s, h in zip(bars, series, heights):
                ax.text(b.get_x() + b.get_width() / 2, h, f"{h:.4g}" if h else ("none VALID" if s in sub.index else ""),
                        ha="center", va="bottom", fontsize=7)
        ax.set_xticks(x, series, fontsize=7)
        ax.set_ylabel("samples/s")
        ax.legend(fontsize=7)
        ax.grid(True, axis="y", alpha=0.3)
    ax.set_title("Max QPS under the latency bound, and offline throughput")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
    """Write reports/<run_id>/ (plots, report.md and report.html) from results/<run_id>/ alone."""
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
    if len(single_stream(cells)):
        _per_model_lines(cells, "p50_ms", "latency p50 (ms, log)", "Latency vs batch size", out / PLOTS["latency"], logy=True)
        _per_model_lines(cells, "throughput_ips", "throughput (items/s, log)", "Throughput vs batch size", out / PLOTS["throughput"], logy=True)
        _speedup_plot(cells, baseline, out / PLOTS["speedup"])
    if len(under_load(cells)):
        bound = run.meta.get("config", {}).get("loadgen", {}).get("latency_bound_ms")
        _latency_throughput_plot(cells, bound, out / PLOTS["latency_throughput"])
        _max_qps_plot(cells, out / PLOTS["max_qps"])
    _accuracy_plot(cells, out / PLOTS["accuracy"])
    curves = _tuning_curves(cells)
    if curves:
        _tuning_plot(curves, out / TUNING_PLOT)
    from bench.report_layers import pareto_section, profile_section

    from bench.report_html import write_html

    extra = profile_section(run.run_dir, out) + pareto_section(cells, out)
    md = _markdown(run, baseline, bool(curves), extra)
    atomic.write_text(out / "report.md", md)  # never half a report
    write_html(md, cells, out)  # the same report, one self-contained page
    return out
