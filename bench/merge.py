"""`bench merge`: the shards of one config (`bench run --shard I/N`, say one per CI matrix job) joined
into one run, with one table and one report, as if one machine had run the grid."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

from bench import results
from bench.config import Config
from bench.errors import BenchError
from bench.results import cell_key, quantized_models_of
from bench.rundir import config_diff, new_run_id, stored_digest

COPIED = ("outputs", "references", "loadgen", "logs")


def merge_runs(run_dirs: list[Path], results_dir: Path) -> Path:
    """A new run under results_dir holding every shard's cells. Refuses (BenchError) runs of
    different configs, a cell present in two runs, and a shard that is still running."""
    if len(run_dirs) < 2:
        raise BenchError("bench merge needs at least two runs")
    metas, journals = [], []
    for d in run_dirs:
        if not (d / "meta.json").is_file():
            raise BenchError(f"{d}: not a run directory (no meta.json)")
        meta = json.loads((d / "meta.json").read_text())
        if meta.get("status") == "running":
            raise BenchError(f"{d}: the run is still running; merge it when it has finished")
        metas.append(meta)
        journals.append(results.read_journal(d))
    first = metas[0]
    for d, meta in zip(run_dirs[1:], metas[1:]):
        if stored_digest(meta) != stored_digest(first):
            diff = config_diff(first.get("config", {}), meta.get("config", {}))
            raise BenchError(f"{d}: a run of another config than {run_dirs[0]}, refusing to merge: " + "; ".join(diff[:6]))
    owner: dict[tuple, Path] = {}
    for d, entries in zip(run_dirs, journals):
        for e in entries:
            key = cell_key(e["row"])
            if key in owner:
                raise BenchError(f"{d} and {owner[key]} both hold the cell {' '.join(map(str, key))}: overlapping shards, refusing to merge")
            owner[key] = d
    quantized = quantized_models_of(first, (e["row"] for entries in journals for e in entries))
    grid = Config.model_validate(first["config"]).grid(quantized)
    missing = [c.label for c in grid if results.cell_key(c) not in owner]
    run_id = new_run_id(f"{first['config']['name']}-merged")
    out = results_dir / run_id
    out.mkdir(parents=True)
    for d in run_dirs:
        for sub in COPIED:
            if (d / sub).is_dir():
                shutil.copytree(d / sub, out / sub, dirs_exist_ok=True)
    for d, entries in zip(run_dirs, journals):
        for e in entries:
            row = {**e["row"], "run_id": run_id, "shard_run_id": d.name}
            results.append_cell(out, row, e["samples_ns"])
    statuses = {m.get("status") for m in metas}
    meta = {**first, "run_id": run_id, "started_at": min(m.get("started_at", "") for m in metas),
            "merged_from": [{"run_id": d.name, "shard": m.get("shard"), "status": m.get("status"),
                             "environment": m.get("environment")} for d, m in zip(run_dirs, metas)],
            "merged_at": dt.datetime.now(dt.timezone.utc).isoformat(), "cells_planned": len(grid), "shard": None,
            "warnings": sum((m.get("warnings", []) for m in metas), [])}
    if missing:
        meta["warnings"].append(f"{len(missing)} planned cell(s) are in no shard: {', '.join(missing[:5])}")
    meta["status"] = "complete" if statuses == {"complete"} and not missing else "incomplete"
    results.finalize(out)
    meta["finished_at"] = max(m.get("finished_at", "") for m in metas)
    results.write_meta(out, meta)
    return out
