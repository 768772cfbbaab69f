"""A run's per-layer profiles and what they answer: why one cell is slower than another.

Each profiled cell leaves `profiles/<cell>.json` (its bench.profiling.Profile, or why it has none);
`layers.parquet` is their one flat table (a row per layer: cell, kernel, ONNX nodes, op types, calls,
median time per call, share of the forward pass, mapping confidence), rebuilt from the files
whenever one is added. Two views of it: time by ONNX op type per cell (the report's stacked bars),
and the gap between two sets of cells by ONNX node group (the report's gap table, `bench explain`).
A node group is the smallest set of ONNX nodes that every engine compared ran as whole layers: a
Conv that ONNX Runtime fused with its Relu and TVM ran as two kernels is one group, so each side's
time for it is comparable.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from bench import atomic
from bench.errors import BenchError
from bench.profiling import HEAVY_OPS, UNMAPPED, Profile
from bench.results import CELL_COLUMNS, KEY, cell_slug

PROFILES, TABLE = "profiles", "layers.parquet"
LAYER_COLUMNS = [*KEY, "kernel", "onnx_nodes", "op_types", "op_type", "calls", "median_us", "us_per_pass",
                 "share", "est_us", "confidence", "profiler", "wall_us", "profiled_wall_us", "coverage", "mapped", "profile_note"]


def save(run_dir: Path, cell: Mapping[str, Any], result: Mapping[str, Any]) -> Path:
    """One cell's profile (`{"profile": ...}`) or why it has none (`{"status", "error"}`), then the table."""
    d = Path(run_dir) / PROFILES
    d.mkdir(exist_ok=True)
    path = d / f"{cell_slug(cell)}.json"
    atomic.write_text(path, json.dumps({**_key_of(cell), **result}, default=str))
    write_table(run_dir)
    return path


def _key_of(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: d.get(k) for k in KEY}


def entries(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((Path(run_dir) / PROFILES).glob("*.json"))]


def frame(items: list[dict[str, Any]]) -> pd.DataFrame:
    rows = []
    for e in items:
        if "profile" not in e:
            continue
        p = Profile.from_dict(e["profile"])
        cell = _key_of(e)
        for layer, est in zip(p.layers, p.estimates):
            rows.append({**cell, "kernel": layer.kernel, "onnx_nodes": list(layer.nodes), "op_types": list(layer.op_types),
                         "op_type": layer.op_type, "calls": layer.calls, "median_us": layer.median_us, "us_per_pass": layer.us_per_pass,
                         "share": p.share(layer),
                         "est_us": est, "confidence": layer.confidence, "profiler": p.profiler,
                         "wall_us": p.wall_us, "profiled_wall_us": p.profiled_wall_us, "coverage": p.coverage, "mapped": p.mapped,
                         "profile_note": p.note or None})
    return pd.DataFrame(rows, columns=LAYER_COLUMNS)


_WRITING = threading.Lock()  # cells finishing at once on a fleet's slots save from several threads


def write_table(run_dir: Path) -> pd.DataFrame:
    import io

    with _WRITING:
        df = frame(entries(run_dir))
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        atomic.write_bytes(Path(run_dir) / TABLE, buf.getvalue())
    return df


def load(run_dir: Path) -> pd.DataFrame:
    """The run's layers table (empty when nothing was profiled)."""
    d = Path(run_dir)
    if (d / PROFILES).is_dir():
        return frame(entries(d))
    if (d / TABLE).is_file():
        return pd.read_parquet(d / TABLE)
    return pd.DataFrame(columns=LAYER_COLUMNS)


def cell_summaries(run_dir: Path) -> list[dict[str, Any]]:
    """Per profiled cell: coverage and mapped shares, and its note or why it has no profile."""
    out = []
    for e in entries(run_dir):
        cell = _key_of(e)
        if "profile" in e:
            p = Profile.from_dict(e["profile"])
            out.append({**cell, "profiler": p.profiler, "wall_ms": p.wall_us / 1e3, "profiled_wall_ms": p.profiled_wall_us / 1e3,
                        "coverage": p.coverage, "mapped": p.mapped, "of_latency": p.of_latency, "overhead": p.overhead, "note": p.note or None, "error": None})
        else:
            out.append({**cell, "error": e.get("error"), "status": e.get("status")})
    return out


def label(row: Mapping[str, Any], keys: list[str] | None = None) -> str:
    keys = keys or ["backend", "precision", "batch_size"]
    return " ".join(f"b{row[k]}" if k == "batch_size" else str(row[k]) for k in keys)


def by_op_type(layers: pd.DataFrame) -> pd.DataFrame:
    """Milliseconds per forward pass by ONNX op type: a row per (model, cell label), a column per op type."""
    if layers.empty:
        return pd.DataFrame()
    varying = [k for k in ("scenario", "streams", "rate", "target", "variant") if layers[k].astype(str).nunique() > 1]
    df = layers.assign(cell=layers.apply(lambda r: label(r, ["backend", "precision", "batch_size", *varying]), axis=1),
                       ms=layers["est_us"] / 1e3)
    return df.pivot_table(index=["model", "cell"], columns="op_type", values="ms", aggfunc="sum", fill_value=0.0)


def parse_filter(text: str, option: str) -> dict[str, str]:
    """'backend=tvm,precision=fp16' -> {'backend': 'tvm', 'precision': 'fp16'}; a clear error otherwise."""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, eq, value = part.partition("=")
        if not eq or key not in KEY:
            raise BenchError(f"{option} {text!r}: expected KEY=VALUE[,KEY=VALUE], KEY one of {', '.join(KEY)}")
        out[key] = value
    if not out:
        raise BenchError(f"{option}: empty; e.g. {option} backend=tvm")
    return out


def _select(layers: pd.DataFrame, spec: Mapping[str, str]) -> pd.DataFrame:
    mask = pd.Series(True, index=layers.index)
    for k, v in spec.items():
        mask &= layers[k].astype(str) == v
    return layers[mask]


def _groups(*sides: pd.DataFrame) -> dict[str, str]:
    """Union-find over the ONNX nodes each layer covers, on every side: node -> its group's first node."""
    parent: dict[str, str] = {}

    def find(n: str) -> str:
        parent.setdefault(n, n)
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    for side in sides:
        for nodes in side["onnx_nodes"]:
            nodes = list(nodes)
            for n in nodes[1:]:
                a, b = find(nodes[0]), find(n)
                if a != b:
                    parent[b] = a
            if nodes:
                find(nodes[0])
    return {n: find(n) for n in parent}


def _group_times(side: pd.DataFrame, groups: Mapping[str, str]) -> tuple[dict[str, float], dict[str, set[str]]]:
    times: dict[str, float] = {}
    kinds: dict[str, set[str]] = {}
    for _, r in side.iterrows():
        nodes = list(r["onnx_nodes"])
        g = groups[nodes[0]] if nodes and r["confidence"] != UNMAPPED else f"{r['op_type']}"
        times[g] = times.get(g, 0.0) + float(r["est_us"])
        kinds.setdefault(g, set()).update(list(r["op_types"]))
    return times, kinds


def gap_table(layers: pd.DataFrame, a: Mapping[str, str], b: Mapping[str, str], top: int | None = None) -> pd.DataFrame:
    """Where each cell matching `a` loses time to the one cell matching `b` that agrees with it on every
    cell column neither names: per ONNX node group, each side's ms per forward pass (without the
    profiler: Profile.estimated_us), the gap, and its share of all the groups where `a` is slower;
    largest first. A cell with no such partner (none, or several) is left out."""
    keys = [k for k in CELL_COLUMNS if k not in a]
    side_a, side_b = _select(layers, a), _select(layers, b)
    rows = []
    for key, ga in (side_a.groupby(keys, dropna=False) if keys else [((), side_a)]):
        key = key if isinstance(key, tuple) else (key,)
        gb = side_b
        for k, v in zip(keys, key):
            if k not in b:
                gb = gb[gb[k].astype(str) == str(v)]
        partner = gb.drop_duplicates(subset=CELL_COLUMNS)[CELL_COLUMNS]
        if len(partner) != 1 or len(ga.drop_duplicates(subset=CELL_COLUMNS)) != 1 or \
                partner.astype(str).iloc[0].tolist() == ga[CELL_COLUMNS].astype(str).iloc[0].tolist():
            continue  # no partner, several, or the cell itself
        rows += _gap_rows(ga, gb, dict(zip(keys, key)))
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    df = df.sort_values("gap_ms", ascending=False, kind="stable").reset_index(drop=True)
    if not top:
        return df
    return df.groupby(keys, dropna=False, sort=False).head(top) if keys else df.head(top)


def _gap_rows(ga: pd.DataFrame, gb: pd.DataFrame, cell: dict[str, Any]) -> list[dict[str, Any]]:
    groups = _groups(ga, gb)
    ta, kinds_a = _group_times(ga, groups)
    tb, kinds_b = _group_times(gb, groups)
    members: dict[str, list[str]] = {}
    for n, g in groups.items():
        members.setdefault(g, []).append(n)
    ops = {n: op for side in (ga, gb) for nodes, types in zip(side["onnx_nodes"], side["op_types"]) for n, op in zip(nodes, types)}
    heavy = {op: i for i, op in enumerate(HEAVY_OPS)}
    named = {g: min(ns, key=lambda n: (heavy.get(ops.get(n, ""), len(heavy)), n)) for g, ns in members.items()}  # its heaviest node
    losses = sum(max(ta.get(g, 0.0) - tb.get(g, 0.0), 0.0) for g in dict.fromkeys([*ta, *tb]))
    rows = []
    for g in dict.fromkeys([*ta, *tb]):
        gap, nodes = ta.get(g, 0.0) - tb.get(g, 0.0), members.get(g, [])
        rows.append({**cell, "group": named.get(g, g) if len(nodes) <= 1 else f"{named[g]} (+{len(nodes) - 1})",
                     "op_types": "+".join(sorted(kinds_a.get(g, set()) | kinds_b.get(g, set()))),
                     "a_ms": ta.get(g, 0.0) / 1e3, "b_ms": tb.get(g, 0.0) / 1e3, "gap_ms": gap / 1e3,
                     "ratio": ta.get(g, 0.0) / tb[g] if tb.get(g) else None,
                     "share_of_gap": gap / losses if losses and gap > 0 else None})
    return rows
