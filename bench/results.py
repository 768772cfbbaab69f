"""The results of a run: one flat table with a row per cell, the raw samples beside it, and meta.json.

While a sweep runs, each finished cell is appended to cells.jsonl (flushed and fsynced), so a crash
loses nothing already measured; `finalize` turns the journal into cells.csv, cells.parquet and
samples.parquet. `load_run` reads a run directory back for reports and comparisons.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import pandas as pd

from bench import atomic
from bench.errors import BenchError

SCHEMA_VERSION = 1
STATUSES = ("ok", "failed", "skipped", "crashed", "timeout")

# The published columns, in order. Anything a row carries beyond these is appended after them.
COLUMNS = [
    "run_id", "model", "backend", "precision", "batch_size", "variant", "status", "error", "phase",
    "compile_s", "mean_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "min_ms", "max_ms", "std_ms", "cv",
    "throughput_ips", "scenario", "streams", "rate", "target", "host", "worker", "placements", "threads_per_stream", "target_qps", "achieved_qps", "latency_bound_ms",
    "loadgen_valid", "loadgen_reason", "gflop", "achieved_gflops", "pct_of_peak", "iterations", "p50_ci_low_ms", "p50_ci_high_ms", "ci_method",
    "outliers", "unstable", "unstable_reason", "steady_state", "repeats", "repeats_stop", "process_p50_ms", "repeat_p50_spread", "dispersion", "timed_region",
    "peak_rss_mb", "worker_ready_s", "lock_wait_s",
    "validated", "accuracy_ok", "accuracy_note", "max_abs_err", "max_rel_err", "mean_abs_err", "p99_abs_err",
    "cosine", "top1_agreement", "atol", "rtol", "min_cosine", "reference",
    "provider", "executes_as", "threads", "backend_version", "cache_hit", "options", "input_shapes", "model_sha256",
    "model_builder", "prepared_sha256", "prepared_nodes", "preparation", "precision_route", "device",
    "profile_coverage", "profile_mapped", "profile_of_latency", "profile_overhead", "profile_note", "profile_error",
]
# What identifies a cell: the grid's axes. Rows stored before scenarios existed are single-stream,
# one stream, no rate.
CELL_COLUMNS = ["model", "backend", "precision", "batch_size", "scenario", "streams", "rate", "target"]
CELL_DEFAULTS = {"scenario": "single_stream", "streams": 1, "rate": "", "target": "local"}
KEY = [*CELL_COLUMNS, "variant"]


def quantized_models_of(meta: dict[str, Any], rows: Iterable[Any]) -> list[str]:
    """The models of a stored run that arrived quantized (run as given; bench.config.Config.grid):
    as its meta.json says, or, for a run stored before it did, as its as-given rows say."""
    from bench.config import AS_GIVEN

    if "quantized_models" in meta:
        return list(meta["quantized_models"])
    return sorted({r["model"] for r in rows if r.get("precision") == AS_GIVEN})


def cell_key(d: Any) -> tuple:
    """The grid coordinates (CELL_COLUMNS) of a row, a journal entry's row, a table row or a Cell."""
    get = d.get if isinstance(d, dict) or hasattr(d, "get") else (lambda k: getattr(d, k, None))

    def value(k: str) -> Any:
        v = get(k)
        if v is None or (isinstance(v, float) and v != v):
            return CELL_DEFAULTS[k]
        return v

    return (get("model"), get("backend"), get("precision"), int(get("batch_size")),
            str(value("scenario")), int(value("streams")), str(value("rate")), str(value("target")))


def cell_slug(d: Any) -> str:
    """A file-name form of a cell's key: model-backend-precision-bN, then the scenario when not single-stream."""
    model, backend, precision, batch, scenario, streams, rate, target = cell_key(d)
    slug = f"{model}-{backend}-{precision}-b{batch}"
    if scenario != CELL_DEFAULTS["scenario"] or streams != 1:
        slug += f"-{scenario}" + (f"-{rate}" if rate else "") + f"-s{streams}"
    return slug if target == CELL_DEFAULTS["target"] else f"{slug}-on-{target}"


def write_meta(run_dir: Path, meta: dict[str, Any]) -> None:
    atomic.write_text(run_dir / "meta.json", json.dumps(meta, indent=2, sort_keys=False, default=str) + "\n")


def processes_of(samples_ns: list[Any]) -> list[list[int]]:
    """A journal entry's samples, one list per worker process (older journals: one flat list)."""
    if samples_ns and not isinstance(samples_ns[0], list):
        return [samples_ns]
    return [p for p in samples_ns if p]


def append_cell(run_dir: Path, row: dict[str, Any], samples_ns: list[list[int]]) -> None:
    line = json.dumps({"row": row, "samples_ns": samples_ns}, default=str) + "\n"
    with open(run_dir / "cells.jsonl", "a") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def _parse_journal(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """(whole records, the fragments that are not). A record is a line that parses as JSON holding a
    row; a line cut short by a crash or kill is a fragment, wherever it is."""
    entries, bad = [], []
    for line in path.read_bytes().split(b"\n"):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            if not isinstance(entry, dict) or "row" not in entry:
                raise ValueError("not a journal record")
        except ValueError:
            bad.append(line.decode(errors="replace"))
            continue
        entries.append(entry)
    return entries, bad


def read_journal(run_dir: Path) -> list[dict[str, Any]]:
    """The whole records of the journal (fragments are skipped; `heal_journal` removes them). A
    cell journaled twice counts once: its last record."""
    path = run_dir / "cells.jsonl"
    if not path.exists():
        return []
    entries, _ = _parse_journal(path)
    last: dict[tuple, int] = {}
    for i, e in enumerate(entries):
        last[cell_key(e["row"])] = i
    keep = set(last.values())
    return [e for i, e in enumerate(entries) if i in keep]


def heal_journal(run_dir: Path) -> str | None:
    """Before anything is appended: rewrite the journal (atomically) with its whole records only,
    when a line is torn (a crash or kill in the middle of an append, or a file cut short), so that a
    new record is never glued to a fragment. Returns a warning naming what was dropped, or None;
    the cells the fragments held are run again."""
    path = run_dir / "cells.jsonl"
    if not path.exists():
        return None
    data = path.read_bytes()
    entries, bad = _parse_journal(path)
    if not bad and (not data or data.endswith(b"\n")):
        return None
    atomic.write_bytes(path, b"".join(json.dumps(e, default=str).encode() + b"\n" for e in entries))
    if not bad:
        return None  # only the final newline was missing
    shown = "; ".join(repr(b[:60]) for b in bad[:3])
    return (f"{path}: dropped {len(bad)} torn line(s) ({shown}) and kept {len(entries)} whole records; "
            "the cells they held will be run again")


def cells_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    for col in COLUMNS:
        if col not in df.columns:
            df[col] = None
    extra = [c for c in df.columns if c not in COLUMNS]
    df = with_cell_columns(df[COLUMNS + extra])
    for col in ("validated", "accuracy_ok", "unstable", "loadgen_valid"):
        df[col] = df[col].astype("boolean")
    return df


def with_cell_columns(df: pd.DataFrame) -> pd.DataFrame:
    """The frame with every CELL_COLUMNS column filled (tables written before scenarios existed lack them)."""
    df = df.copy()
    for col, default in CELL_DEFAULTS.items():
        df[col] = df[col].where(df[col].notna(), default) if col in df.columns else default
        df[col] = df[col].astype(type(default)) if len(df) else df[col]
    return df


def tables(entries: list[dict[str, Any]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(cells, samples) built from journal entries, in memory."""
    cells = cells_frame([e["row"] for e in entries])
    samples = pd.DataFrame(
        [
            {"run_id": e["row"]["run_id"], **dict(zip(CELL_COLUMNS, cell_key(e["row"]))), "variant": e["row"].get("variant"),
             "process": p, "iteration": i, "latency_ms": ns / 1e6}
            for e in entries
            for p, proc in enumerate(processes_of(e["samples_ns"]))
            for i, ns in enumerate(proc)
        ],
        columns=["run_id", *KEY, "process", "iteration", "latency_ms"],
    )
    return cells, samples


def finalize(run_dir: Path) -> pd.DataFrame:
    """Write the tables from the journal (by the process that holds the run: bench.rundir)."""
    cells, samples = tables(read_journal(run_dir))
    atomic.write_text(run_dir / "cells.csv", cells.to_csv(index=False))
    for frame, name in ((cells, "cells.parquet"), (samples, "samples.parquet")):
        buf = io.BytesIO()
        frame.to_parquet(buf, index=False)
        atomic.write_bytes(run_dir / name, buf.getvalue())
    return cells


def _read_table(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except Exception as e:  # pyarrow raises several types for a torn or foreign file
        raise BenchError(f"{path}: unreadable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                         f"the run's journal cells.jsonl holds its rows") from None


@dataclass(frozen=True)
class StoredRun:
    run_dir: Path
    meta: dict[str, Any]
    cells: pd.DataFrame
    samples: pd.DataFrame

    @property
    def run_id(self) -> str:
        return self.meta["run_id"]


def try_run_lock(d: Path) -> int | None:
    """Take a run's exclusive lock without waiting (the file descriptor holding it; release with
    release_run_lock), or None when another process holds the run: one writer per run, whether a
    sweep (bench.rundir) or a reader rebuilding stale tables."""
    fd = os.open(d / ".lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def release_run_lock(fd: int) -> None:
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


@contextlib.contextmanager
def _unheld(d: Path) -> Iterator[bool]:
    """The run's lock if nobody holds it: True while held here, False when another process has the
    run (or the lock file cannot be made)."""
    try:
        fd = try_run_lock(d)
    except OSError:
        fd = None
    try:
        yield fd is not None
    finally:
        if fd is not None:
            release_run_lock(fd)


def _table_matches(d: Path, entries: list[dict[str, Any]]) -> bool:
    """Whether cells.parquet holds exactly the journal's cells, by their keys (the table is derived,
    never trusted over the journal)."""
    try:
        table = _read_table(d / "cells.parquet")
    except Exception:
        return False
    have = sorted(map(str, (cell_key(r) for r in with_cell_columns(table).to_dict("records"))))
    return have == sorted(map(str, (cell_key(e["row"]) for e in entries)))


def load_run(run_dir: str | os.PathLike) -> StoredRun:
    d = Path(run_dir)
    if not (d / "meta.json").is_file():
        raise BenchError(f"{d}: not a run directory (no meta.json); runs live under results/<run_id>/")
    try:
        meta = json.loads((d / "meta.json").read_text())
    except json.JSONDecodeError as e:
        raise BenchError(f"{d / 'meta.json'}:{e.lineno}: not valid JSON: {e.msg}") from None
    if meta.get("schema_version") != SCHEMA_VERSION:
        raise BenchError(f"{d / 'meta.json'}: schema_version {meta.get('schema_version')!r}; this bench reads {SCHEMA_VERSION}")
    # The journal is the record: a table that disagrees with it (by the cells' keys), or is missing
    # (a run interrupted before it finalized), is rebuilt from it; written back only while no other
    # process holds the run's lock (a reader never writes under a running sweep), else in memory.
    entries = read_journal(d) if (d / "cells.jsonl").exists() else []
    if (d / "cells.parquet").is_file() and (not entries or _table_matches(d, entries)):
        cells = _read_table(d / "cells.parquet")
        samples = _read_table(d / "samples.parquet") if (d / "samples.parquet").is_file() else pd.DataFrame()
    elif entries:
        with _unheld(d) as free:
            if free:
                finalize(d)
        cells, samples = tables(entries)
    else:
        raise BenchError(f"{d}: the run holds no finished cells")
    return StoredRun(d, meta, with_cell_columns(cells), with_cell_columns(samples) if len(samples.columns) else samples)
