"""The report's answers to "why" and "which": where each cell's time goes (per-layer profiles: time
by ONNX op type, and where a backend loses time to the fastest one), and accuracy against latency
(a Pareto plot per model). Built from a stored run alone, like the rest of the report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench import layers

TOP_OPS = 8  # op types shown by name in the bars; the rest is "other"
TOP_GROUPS = 5  # node groups per gap table


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def profile_section(run_dir: Path, out: Path) -> list[str]:
    """The report's "Where the time goes" section (and its plots in `out`), or [] without profiles."""
    summaries = layers.cell_summaries(run_dir)
    if not summaries:
        return []
    df = layers.load(run_dir)
    parts = ["## Where the time goes", "",
             "Per-layer profiles from each engine's own profiler (ONNX Runtime's session profiler, TVM's VM instrument, "
             "TensorRT's IProfiler), taken in a process of their own after the timed ones; profiled times never replace timed "
             "ones. Coverage: the layers' sum as a share of the profiled forward pass; mapped: the share in layers mapped to ONNX "
             "nodes (exact names, or op type and order for TVM); layers / ms: the layers' sum against the unprofiled pass (ms), the "
             "end-to-end latency (above 100% when the profiler slowed the layers). Layer times below are estimated without the profiler (`est_us`).", "",
             md_table(["model", "cell", "profiler", "ms", "profiled ms", "coverage", "mapped", "layers / ms", "note"],
                             [[s["model"], layers.label(s), s.get("profiler", "-"), _f(s.get("wall_ms")), _f(s.get("profiled_wall_ms")),
                               _pct(s.get("coverage")), _pct(s.get("mapped")), _pct(s.get("of_latency")),
                               s.get("note") or (f"no profile: {s['error']}" if s.get("error") else "")] for s in summaries]), ""]
    for model in dict.fromkeys(df["model"]):
        name = f"op_types_{_safe(str(model))}.png"
        _op_type_bars(df[df["model"] == model], str(model), out / name)
        parts += [f"![time by op type, {model}]({name})", "", f"{model}: where each cell's time goes, by ONNX op type (shares; its total at the right).", ""]
        parts += _gap_tables(df[df["model"] == model], str(model))
    return parts


def _gap_tables(df: pd.DataFrame, model: str) -> list[str]:
    """Each backend against the fastest profiled one at the same precision and batch size."""
    parts = []
    for (precision, batch), cells in df.groupby(["precision", "batch_size"], sort=False):
        walls = cells.groupby("backend")["wall_us"].first().sort_values()
        if len(walls) < 2:
            continue
        fastest = walls.index[0]
        for backend in walls.index[1:]:
            gap = layers.gap_table(cells, {"backend": backend}, {"backend": fastest}, top=TOP_GROUPS)
            if gap.empty:
                continue
            title = f"{backend} {precision} b{batch} vs {fastest} {precision} b{batch}"
            parts += [f"**{model}: {title}** ({walls[backend] / 1e3:.3g} ms vs {walls[fastest] / 1e3:.3g} ms a forward pass, timed "
                      "unprofiled in the profiling process): the ONNX node groups "
                      f"where {backend} loses most time (`bench explain RUN --a backend={backend} --b backend={fastest}`).", "",
                      md_table(GAP_HEADER, gap_rows(gap)), ""]
    return parts


GAP_HEADER = ["node group", "op types", "a ms", "b ms", "gap ms", "a / b", "share of gap"]


def gap_rows(gap: pd.DataFrame) -> list[list[str]]:
    return [[str(r["group"]), str(r["op_types"]), _f(r["a_ms"]), _f(r["b_ms"]), _f(r["gap_ms"]),
             "-" if r["ratio"] is None or pd.isna(r["ratio"]) else f"{r['ratio']:.3g}x", _pct(r["share_of_gap"])] for _, r in gap.iterrows()]


def md_table(header: list[str], rows: list[list[str]]) -> str:
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _f(v: Any) -> str:
    return "-" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{float(v):.3g}"


def _pct(v: Any) -> str:
    return "-" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{float(v):.0%}"


def _op_type_bars(df: pd.DataFrame, model: str, path: Path) -> None:
    """One bar per cell, split by ONNX op type as shares of its time (cells differ 100x in total, so
    absolute bars would show one colour); each bar's total in ms at its end."""
    import matplotlib.pyplot as plt

    table = layers.by_op_type(df).droplevel(0)
    order = table.sum().sort_values(ascending=False).index
    shown = list(order[:TOP_OPS])
    if len(order) > TOP_OPS:
        table = table.assign(other=table[list(order[TOP_OPS:])].sum(axis=1))
        shown.append("other")
    totals = table[shown].sum(axis=1).to_numpy()
    fig, ax = plt.subplots(figsize=(8, 2.0 + 0.45 * len(table)))
    left = np.zeros(len(table))
    colors = plt.get_cmap("tab10")
    for i, op in enumerate(shown):
        share = table[op].to_numpy() / np.where(totals > 0, totals, 1.0)
        ax.barh(range(len(table)), share, left=left, label=op, color=colors(i % 10))
        left += share
    for y, total in enumerate(totals):
        ax.text(1.01, y, f"{total:.3g} ms", va="center", fontsize=8)
    ax.set_yticks(range(len(table)), list(table.index), fontsize=8)
    ax.set_xlim(0, 1.15)
    ax.set_xticks([0, 0.25, 0.5, 0.75, 1.0], ["0%", "25%", "50%", "75%", "100%"])
    ax.set_xlabel("share of the profiled layers' time (the cell's ms per forward pass at the right)")
    ax.set_title(f"{model}: time by ONNX op type")
    ax.legend(fontsize=7, ncol=min(len(shown), 5), loc="upper center", bbox_to_anchor=(0.5, -0.35 if len(table) < 4 else -0.18))
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- accuracy against latency --------------------------------------------------------------------------

DRIFTS = [("cosine", "1 - cosine", lambda s: 1 - s), ("max_abs_err", "max |error|", lambda s: s),
          ("top1_agreement", "1 - top-1 agreement", lambda s: 1 - s)]
FLOOR = 1e-9  # a drift of 0 (the reference itself) plots here on the log axis


def pareto_front(points: list[tuple[float, float]]) -> list[bool]:
    """Which (drift, latency) points no other point beats on both (lower is better on each)."""
    return [not any(d2 <= d and l2 <= lat and (d2, l2) != (d, lat) for d2, l2 in points) for d, lat in points]


def pareto_section(cells: pd.DataFrame, out: Path) -> list[str]:
    """A Pareto plot per model: p50 (95% interval) against each drift measure the cells carry."""
    ok = cells[(cells["status"] == "ok") & cells["p50_ms"].notna() & cells["validated"].fillna(False).astype(bool)]
    parts = []
    for model, rows in ok.groupby("model", sort=False):
        drifts = [(c, t, f) for c, t, f in DRIFTS if c in rows and rows[c].notna().any()]
        if not drifts or len(rows) < 2:
            continue
        name = f"pareto_{_safe(str(model))}.png"
        _pareto_plot(rows, str(model), drifts, out / name)
        parts += [f"![accuracy vs latency, {model}]({name})", "",
                  f"{model}: median latency (bars: its 95% interval) against drift from the reference, per batch size; filled "
                  "markers are Pareto-optimal (no other cell of that batch size is both faster and closer to the reference).", ""]
    return ["## Accuracy against latency", "", *parts] if parts else []


def _pareto_plot(rows: pd.DataFrame, model: str, drifts: list, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(drifts), figsize=(4.2 * len(drifts), 3.6), squeeze=False)
    for ax, (column, title, transform) in zip(axes[0], drifts):
        for j, (batch, group) in enumerate(rows.groupby("batch_size")):
            group = group[group[column].notna()]
            x = np.clip(transform(group[column].astype(float)).to_numpy(), FLOOR, None)
            y = group["p50_ms"].astype(float).to_numpy()
            lo = (y - group["p50_ci_low_ms"].astype(float).fillna(pd.Series(y, index=group.index)).to_numpy()).clip(0)
            hi = (group["p50_ci_high_ms"].astype(float).fillna(pd.Series(y, index=group.index)).to_numpy() - y).clip(0)
            front = pareto_front(list(zip(x, y)))
            color = plt.get_cmap("tab10")(j % 10)
            ax.errorbar(x, y, yerr=[lo, hi], fmt="none", ecolor=color, alpha=0.6)
            for xi, yi, f, (_, r) in zip(x, y, front, group.iterrows()):
                ax.scatter([xi], [yi], color=color if f else "white", edgecolor=color, zorder=3,
                           label=f"batch {batch}" if f and not any(t.get_label() == f"batch {batch}" for t in ax.collections) else None)
                ax.annotate(f"{r['backend']} {r['precision']}", (xi, yi), fontsize=6, xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"{title} (0 plotted at {FLOOR:g})")
        ax.set_ylabel("p50 ms")
        ax.legend(fontsize=7)
    fig.suptitle(f"{model}: accuracy against latency")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
