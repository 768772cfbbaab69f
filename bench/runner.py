"""The sweep: for each cell of the grid, build the model, compile the variant, validate it against
the reference on seeded inputs, time it, and journal the row.

Everything that can be checked cheaply (config, model files, shapes) is checked in `plan` before a
run directory exists. Inside the sweep, a failing cell becomes a row with status `failed` and the
sweep goes on. The runner talks to backends through the protocol in bench.backends.base only.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from bench import results
from bench.backends import get_backend
from bench.backends.base import Availability, Backend, Compiled, CompileRequest, Unsupported
from bench.config import Cell, Config
from bench.environment import environment
from bench.inputs import seeded_feeds
from bench.models.prepare import ModelInfo, PreparedModel, inspect_model, materialize
from bench.timing import measure, summarize
from bench.validate import compare, run_outputs

PHASES = ("build", "compile", "validate", "time")


@dataclass(frozen=True)
class Plan:
    config: Config
    models: dict[str, ModelInfo]
    cells: list[Cell]
    config_path: str | None = None


def plan(config: Config, models_dir: Path, config_path: str | Path | None = None) -> Plan:
    """Check every model entry and expand the grid. Raises BenchError; writes nothing."""
    config_dir = Path(config_path).resolve().parent if config_path else None
    infos = {
        m.name: inspect_model(m, i, config.seed, config.batch_sizes, Path(models_dir), config_dir)
        for i, m in enumerate(config.models)
    }
    return Plan(config, infos, config.grid(), str(config_path) if config_path else None)


class Reporter:
    """Receives progress; the CLI draws a progress bar, tests and the Python API pass this no-op."""

    def start(self, total: int, run_id: str) -> None: ...

    def cell(self, index: int, cell: Cell) -> None: ...

    def phase(self, cell: Cell, phase: str) -> None: ...

    def done(self, row: dict[str, Any]) -> None: ...


def new_run_id(name: str) -> str:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{name}-{secrets.token_hex(3)}"


def _error_text(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()
    first = msg[0] if msg else ""
    # Compiler errors put the useful line last; keep both ends, bounded.
    last = msg[-1] if len(msg) > 1 else ""
    text = f"{type(exc).__name__}: {first}" + (f" ... {last}" if last and last != first else "")
    return text[:500]


@dataclass
class _Sweep:
    plan: Plan
    run_id: str
    run_dir: Path
    reporter: Reporter
    backend_factory: Callable[[str], Backend]
    backends: dict[str, tuple[Backend | None, Availability]] = field(default_factory=dict)
    prepared: dict[str, PreparedModel | BaseException] = field(default_factory=dict)
    feeds: dict[tuple[str, int], list] = field(default_factory=dict)
    references: dict[tuple[str, int], Any] = field(default_factory=dict)

    @property
    def config(self) -> Config:
        return self.plan.config

    def backend(self, name: str) -> tuple[Backend | None, Availability]:
        if name not in self.backends:
            try:
                b = self.backend_factory(name)
                self.backends[name] = (b, b.availability())
            except Exception as e:
                self.backends[name] = (None, Availability(False, f"backend failed to load: {_error_text(e)}"))
        return self.backends[name]

    def model(self, name: str) -> PreparedModel:
        if name not in self.prepared:
            try:
                self.prepared[name] = materialize(self.plan.models[name])
            except Exception as e:
                self.prepared[name] = e
        got = self.prepared[name]
        if isinstance(got, BaseException):
            raise RuntimeError(f"building model {name!r} failed: {_error_text(got)}") from got
        return got

    def request(self, model: PreparedModel, precision: str, batch: int) -> CompileRequest:
        work = self.run_dir / "work" / f"{model.name}-{precision}-b{batch}"
        return CompileRequest(model, precision, batch, model.info.shapes(batch), self.config.threads, work)

    def inputs(self, model: PreparedModel, batch: int) -> list:
        key = (model.name, batch)
        if key not in self.feeds:
            self.feeds[key] = seeded_feeds(model.info, batch, self.config.seed, self.config.validation.iterations)
        return self.feeds[key]

    def reference(self, model: PreparedModel, batch: int) -> Any:
        """Reference outputs for (model, batch), computed once and shared by every cell."""
        key = (model.name, batch)
        if key not in self.references:
            ref = self.config.reference
            try:
                backend, avail = self.backend(ref.backend)
                if backend is None or not avail.usable:
                    raise RuntimeError(f"reference backend {ref.backend} is unavailable: {avail.reason}")
                compiled = backend.compile(self.request(model, ref.precision, batch))
                try:
                    self.references[key] = run_outputs(compiled, f"reference:{ref.backend}/{ref.precision}", self.inputs(model, batch))
                finally:
                    compiled.release()
            except Exception as e:
                self.references[key] = e
        got = self.references[key]
        if isinstance(got, BaseException):
            raise RuntimeError(f"reference failed: {_error_text(got)}") from got
        return got

    def run_cell(self, cell: Cell) -> tuple[dict[str, Any], list[int]]:
        cfg = self.config
        tol = cfg.tolerance(cell.precision)
        info = self.plan.models[cell.model]
        backend, avail = self.backend(cell.backend)
        row: dict[str, Any] = {
            "run_id": self.run_id, "model": cell.model, "backend": cell.backend, "precision": cell.precision,
            "batch_size": cell.batch_size, "variant": getattr(backend, "variant", None), "status": "ok", "error": None, "phase": None,
            "validated": False, "accuracy_ok": None, "atol": tol.atol, "rtol": tol.rtol, "min_cosine": tol.min_cosine,
            "reference": f"{cfg.reference.backend}/{cfg.reference.precision}",
            "input_shapes": json.dumps(info.shapes(cell.batch_size)),
        }
        samples: list[int] = []
        if backend is None or not avail.usable:
            row.update(status="skipped", error=f"{cell.backend} unavailable: {avail.reason}")
            return row, samples
        if cell.precision not in backend.precisions:
            row.update(status="skipped", error=f"{cell.backend} does not build {cell.precision}; it builds {', '.join(backend.precisions)}")
            return row, samples

        phase = "build"
        compiled: Compiled | None = None
        try:
            self.reporter.phase(cell, phase)
            model = self.model(cell.model)
            row["model_sha256"] = model.sha256

            phase = "compile"
            self.reporter.phase(cell, phase)
            t0 = time.perf_counter()
            compiled = backend.compile(self.request(model, cell.precision, cell.batch_size))
            row["compile_s"] = time.perf_counter() - t0
            row.update({k: compiled.facts.get(k) for k in ("variant", "provider", "threads", "backend_version", "executes_as")})

            phase = "validate"
            self.reporter.phase(cell, phase)
            feeds = self.inputs(model, cell.batch_size)
            try:
                reference = self.reference(model, cell.batch_size)
            except RuntimeError as e:
                # Without a reference the cell can still be timed; it is published as unvalidated.
                row["accuracy_note"] = str(e)
                reference = None
            if reference is not None:
                drift = compare(reference, run_outputs(compiled, cell.label, feeds), tol, info.task)
                row.update(drift.as_row(), validated=True, accuracy_note=drift.reason or None)

            phase = "time"
            self.reporter.phase(cell, phase)
            fn = compiled.prepare(feeds[0])
            samples = measure(fn, compiled.clock, cfg.timing)
            row.update(summarize(samples, cell.batch_size).as_row())
        except Unsupported as e:
            row.update(status="skipped", error=str(e), phase=phase)
        except Exception as e:
            row.update(status="failed", error=_error_text(e), phase=phase)
            (self.run_dir / "logs").mkdir(exist_ok=True)
            log = self.run_dir / "logs" / f"{cell.model}-{cell.backend}-{cell.precision}-b{cell.batch_size}.txt"
            log.write_text("".join(traceback.format_exception(e)))
        finally:
            if compiled is not None:
                compiled.release()
        return row, samples


def execute(
    p: Plan,
    results_dir: Path,
    reporter: Reporter | None = None,
    backend_factory: Callable[[str], Backend] = get_backend,
    run_id: str | None = None,
) -> Path:
    """Run every cell of the plan; returns the run directory. Ctrl-C keeps what finished."""
    reporter = reporter or Reporter()
    run_id = run_id or new_run_id(p.config.name)
    run_dir = Path(results_dir) / run_id
    run_dir.mkdir(parents=True, exist_ok=False)
    sweep = _Sweep(p, run_id, run_dir, reporter, backend_factory)
    meta: dict[str, Any] = {
        "schema_version": results.SCHEMA_VERSION,
        "run_id": run_id,
        "status": "running",
        "started_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        "config_path": p.config_path,
        "config_hash": p.config.digest(),
        "config": p.config.canonical(),
        "environment": environment(p.config.threads),
        "cells_planned": len(p.cells),
    }
    results.write_meta(run_dir, meta)
    reporter.start(len(p.cells), run_id)
    try:
        for i, cell in enumerate(p.cells):
            reporter.cell(i, cell)
            row, samples = sweep.run_cell(cell)
            results.append_cell(run_dir, row, samples)
            reporter.done(row)
        meta["status"] = "complete"
    except KeyboardInterrupt:
        meta["status"] = "interrupted"
        raise
    finally:
        meta["finished_at"] = dt.datetime.now(dt.timezone.utc).isoformat()
        meta["backends"] = {
            name: {"usable": a.usable, "reason": a.reason, "versions": dict(a.versions)}
            for name, (_, a) in sweep.backends.items()
        }
        results.write_meta(run_dir, meta)
        if results.read_journal(run_dir):
            results.finalize(run_dir)
    return run_dir
