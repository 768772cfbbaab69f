"""A run directory's life: a new run or a resumed one (meta.json), its lock, the cells it still
lacks, and its closing (the tables, then meta.json)."""

from __future__ import annotations

import datetime as dt
import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from bench import results
from bench.backends import describe
from bench.config import Cell
from bench.environment import environment
from bench.models.prepare import quantized_models
from bench.errors import BenchError
from bench.results import cell_key
from bench.worker import alive_worker


def new_run_id(name: str) -> str:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{name}-{secrets.token_hex(3)}"


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: d}


def config_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    a, b = _flatten(old), _flatten(new)
    return [f"{k}: {a.get(k, '<absent>')!r} -> {b.get(k, '<absent>')!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


class _RunLock:
    """An exclusive lock on a run directory: two processes never write one run at once."""

    def __init__(self, run_dir: Path):
        fd = results.try_run_lock(run_dir)
        if fd is None:
            raise BenchError(f"{run_dir}: another bench process is writing this run")
        self.fd = fd

    def release(self) -> None:
        results.release_run_lock(self.fd)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat()


@dataclass
class RunDir:
    """An open run directory: its path, its meta (written by `begin` and `close`), its lock."""

    path: Path
    meta: dict[str, Any]
    lock: _RunLock

    @classmethod
    def open(cls, plan: Any, results_dir: Path, run_id: str | None, resume: bool, cells: list[Cell], isolate: bool,
             shard: tuple[int, int] | None) -> "RunDir":
        """A new run (`run_id` or a fresh one), or with `resume` the existing one, refused when
        its config changed since or a worker of an earlier attempt still runs."""
        cfg = plan.config
        if resume:
            path, meta = _resumed(cfg, results_dir, run_id)
            meta["quantized_models"] = quantized_models(plan.models)  # a run begun before runs stored it
        else:
            run_id = run_id or new_run_id(cfg.name)
            path = results_dir / run_id
            path.mkdir(parents=True, exist_ok=False)
            meta = {"schema_version": results.SCHEMA_VERSION, "run_id": run_id, "started_at": _now(),
                    "config_path": plan.config_path, "config_hash": cfg.digest(), "config": cfg.canonical(),
                    "quantized_models": quantized_models(plan.models),
                    "environment": environment(cfg.threads), "warnings": cfg.warnings(), "cells_planned": len(cells),
                    "shard": f"{shard[0]}/{shard[1]}" if shard else None, "isolated": isolate,
                    "backends": {b: describe(b) for b in dict.fromkeys([*cfg.backends, cfg.reference.backend])}}
        run = cls(path, meta, _RunLock(path))
        try:
            running = [w for w in map(alive_worker, sorted((path / "work").glob("*.pid"))) if w]
            if running:
                raise BenchError(f"{path}: a worker of an earlier attempt at this run is still running ({', '.join(running)}); "
                                 "wait for it to end or kill it, then resume")
        except BaseException:
            run.lock.release()
            raise
        return run

    def pending(self, cells: list[Cell], warn: Callable[[str], None]) -> list[Cell]:
        """The cells the journal lacks (after healing a torn tail); a cell whose fleet worker was
        lost mid-cell is journaled `crashed` and resumable, and runs again."""
        healed = results.heal_journal(self.path)
        if healed:
            warn(healed)
            self.meta.setdefault("warnings", []).append(healed)
        done = {cell_key(e["row"]) for e in results.read_journal(self.path) if not e["row"].get("resumable")}
        return [c for c in cells if cell_key(c) not in done]

    def begin(self, resumed: bool) -> None:
        self.meta["status"] = "running"
        if resumed:
            self.meta.setdefault("resumed_at", []).append(_now())
        results.write_meta(self.path, self.meta)

    def close(self, status: str, error: BaseException | None = None) -> None:
        """The tables first, then meta.json (atomically): `complete` is never said of a run without
        its tables. A sweep that stops on an error says `failed`, never `running`."""
        self.meta["status"] = status
        if error is not None:
            self.meta["error"] = f"{type(error).__name__}: {error}"
        if results.read_journal(self.path):
            results.finalize(self.path)
        self.meta["finished_at"] = _now()
        results.write_meta(self.path, self.meta)


def stored_digest(meta: dict[str, Any]) -> str | None:
    """A stored run's config hash as this version of bench computes it: settings added since the run
    was made take their defaults on both sides, so an upgrade alone never reads as a changed config.
    The stored hash when the stored config no longer validates."""
    from bench.config import Config

    try:
        return Config.model_validate(meta["config"]).digest()
    except Exception:
        return meta.get("config_hash")


def _resumed(cfg: Any, results_dir: Path, run_id: str | None) -> tuple[Path, dict[str, Any]]:
    if run_id is None:
        raise BenchError("resume needs a run id")
    path = results_dir / run_id
    if not (path / "meta.json").is_file():
        raise BenchError(f"--resume {run_id}: no run at {path}")
    meta = json.loads((path / "meta.json").read_text())
    if stored_digest(meta) != cfg.digest():
        diff = config_diff(meta.get("config", {}), cfg.canonical())
        raise BenchError(f"--resume {run_id}: the config changed since that run, refusing to mix results: " + "; ".join(diff[:8]))
    return path, meta
