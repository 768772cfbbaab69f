"""The work done for one cell, or for one reference, inside a worker process (or in-process).

Jobs are plain JSON-ready dicts so that a worker needs nothing from its parent but a file. Every
exception a job can catch becomes data in its result; what it cannot catch (a segfault, a kill) is
the parent's to record.
"""

from __future__ import annotations

import json
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from bench import goldens, loadgen, machine_lock
from bench.backends import get_backend
from bench.backends.base import Backend, Compiled, CompileRequest, Unsupported
from bench.config import SINGLE_STREAM, Cell, Config
from bench.cache import ArtifactCache
from bench.inputs import calibration_set, validation_feeds
from bench.models.prepare import ModelInfo, PreparedModel, for_cell, materialize
from bench.timing import measure
from bench.validate import compare, run_outputs


def error_text(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()
    first = msg[0] if msg else ""
    # Compiler errors put the useful line last; keep both ends, bounded.
    last = msg[-1] if len(msg) > 1 else ""
    return (f"{type(exc).__name__}: {first}" + (f" ... {last}" if last and last != first else ""))[:500]


def output_meta(config: Config, model: PreparedModel, batch: int) -> dict[str, Any]:
    """What an output set must match to stand for this model's seeded inputs."""
    return {
        "model": model.name,
        "model_sha256": model.sha256,
        "seed": config.seed,
        "batch_size": batch,
        "iterations": config.validation.iterations,
        "input_shapes": {k: list(v) for k, v in model.info.shapes(batch).items()},
        "input_source": input_source(config, model.name),
    }


def input_source(config: Config, model: str) -> str:
    data = config.model(model).data
    return "seeded-random" if data is None else f"images:{Path(data.images).resolve()}|{data.model_dump_json()}"


def _request(config: Config, backend: Backend, model: PreparedModel, precision: str, batch: int, work: Path,
             cache: ArtifactCache, streams: int = 1) -> CompileRequest:
    # Calibrated with batches of the cell's size: a model frozen to it accepts nothing else, and an
    # engine whose profile spans the grid's batch sizes has it as its opt (calibration) shape.
    calib_batch = batch
    return CompileRequest(
        model, precision, batch, model.info.shapes(batch), config.threads_per_stream(backend.name, streams), work, cache,
        calibration=lambda: calibration_set(model.info, config.model(model.name).data, config.seed, config.calibration.samples,
                                            calib_batch),
        options=config.backend_options.get(backend.name, {}), batch_sizes=tuple(config.batch_sizes),
    )


def prepared_facts(source: PreparedModel, prepared: PreparedModel) -> dict[str, Any]:
    """What a row records of the model: the file the config named, and what the backend got."""
    return {"model_sha256": source.sha256, "prepared_sha256": prepared.sha256, "gflop": prepared.facts.get("gflop"),
            "prepared_nodes": f"{prepared.facts.get('nodes_before')} -> {prepared.facts.get('nodes_after')}"}


def reference_job(config: Config, info: ModelInfo, batch: int, out_path: Path, work_dir: Path, cache: ArtifactCache) -> dict[str, Any]:
    """Run the reference backend on the seeded inputs and store its outputs (the golden format)."""
    ref = config.reference
    source = materialize(info)
    backend = get_backend(ref.backend)
    avail = backend.availability()
    if not avail.usable:
        raise RuntimeError(f"reference backend {ref.backend} is unavailable: {avail.reason}")
    model = for_cell(source, batch, cache, backend.keeps_dynamic_batch)
    compiled = backend.compile(_request(config, backend, model, ref.precision, batch, work_dir, cache))
    try:
        results = run_outputs(compiled, f"reference:{ref.backend}/{ref.precision}",
                              validation_feeds(info, config.model(info.name).data, batch, config.seed, config.validation.iterations))
    finally:
        compiled.release()
    meta = {**output_meta(config, source, batch), "producer": f"{ref.backend}/{ref.precision}",
            "backend_version": compiled.facts.get("backend_version")}
    goldens.save(out_path, goldens.from_run_results(results), meta)
    return {"path": str(out_path)}


def cell_job(
    config: Config,
    info: ModelInfo,
    cell: Cell,
    reference_path: str | None,
    reference_note: str | None,
    validate: bool,
    outputs_path: Path | None,
    work_dir: Path,
    cache: ArtifactCache,
    on_phase: Callable[[str], None] = lambda phase: None,
    compile_only: bool = False,
    lock_label: str | None = None,
    loadgen_dir: Path | None = None,
) -> dict[str, Any]:
    """Build, compile, validate (when asked) and time one cell. Returns {"row": {...}, "samples_ns": [...]}.

    The row holds what this process learned; timing statistics are the parent's to compute."""
    tol = config.tolerance(cell.precision, cell.model)
    per_output = {o: config.tolerance(cell.precision, cell.model, o) for o in config.model(cell.model).output_tolerances}
    row: dict[str, Any] = {"status": "ok", "error": None, "phase": None}
    samples: list[int] = []
    backend = get_backend(cell.backend)
    row["variant"] = backend.variant
    avail = backend.availability()
    if not avail.usable:
        row.update(status="skipped", error=f"{cell.backend} unavailable: {avail.reason}")
        return {"row": row, "samples_ns": samples}
    if cell.precision not in backend.precisions:
        row.update(status="skipped", error=f"{cell.backend} does not build {cell.precision}; it builds {', '.join(backend.precisions)}")
        return {"row": row, "samples_ns": samples}

    phase = "build"
    compiled: Compiled | None = None
    instances: list[Compiled] = []
    try:
        on_phase(phase)
        source = materialize(info)
        row["model_sha256"] = source.sha256
        phase = "prepare"
        on_phase(phase)
        model = for_cell(source, cell.batch_size, cache, backend.keeps_dynamic_batch)
        row.update(prepared_facts(source, model))

        phase = "compile"
        on_phase(phase)
        t0 = time.perf_counter()
        request = _request(config, backend, model, cell.precision, cell.batch_size, work_dir, cache, cell.streams)
        compiled = backend.compile(request)
        row["compile_s"] = time.perf_counter() - t0
        row.update(compiled.facts)
        if compile_only:
            return {"row": row, "samples_ns": samples}
        if getattr(compiled, "cannot_run", ""):
            raise Unsupported(compiled.cannot_run)

        feeds = validation_feeds(info, config.model(cell.model).data, cell.batch_size, config.seed, config.validation.iterations)
        if validate:
            phase = "validate"
            on_phase(phase)
            outputs = run_outputs(compiled, cell.label, feeds)
            if outputs_path is not None:
                goldens.save(outputs_path, goldens.from_run_results(outputs),
                             {**output_meta(config, source, cell.batch_size), "producer": f"{cell.backend}/{cell.precision}"})
            reference = None
            if reference_path is None:
                row["accuracy_note"] = reference_note or "no reference"
            else:
                stored = goldens.load(Path(reference_path))
                stale = stored.mismatch(output_meta(config, source, cell.batch_size))
                if stale:
                    row["accuracy_note"] = f"reference outputs do not match this model's inputs: {stale}"
                else:
                    reference = stored.run_results(f"reference:{stored.meta.get('producer')}")
            if reference is not None:
                drift = compare(reference, outputs, tol, info.task, per_output)
                row.update(drift.as_row(), validated=True, accuracy_note=drift.reason or None)

        if cell.scenario != SINGLE_STREAM:
            phase = "loadgen"
            on_phase(f"compile {cell.streams - 1} more instance(s) for the streams")
            instances = [backend.compile(request) for _ in range(cell.streams - 1)]
            calls = [loadgen.completing(c.prepare(feeds[i % len(feeds)]), c) for i, c in enumerate([compiled, *instances])]
            row.update(timed_region=loadgen.timed_region(cell, request.threads), threads_per_stream=request.threads)
        else:
            phase = "time"
            fn = compiled.prepare(feeds[0])
            row["timed_region"] = getattr(compiled, "timed_region", None)
        on_phase(phase)
        with machine_lock.timing(f"run {lock_label or '?'}, cell {cell.label}",
                                 lambda who: on_phase(f"waiting to time: the machine's timing lock is held by {who}")) as waited:
            on_phase(phase)
            if cell.scenario != SINGLE_STREAM:
                row["loadgen"], samples = loadgen.run_scenario(cell, config.loadgen, calls, loadgen_dir or work_dir / "loadgen", on_phase)
            else:
                samples = measure(fn, compiled.clock, config.timing, getattr(compiled, "interval", None))
                opinion = getattr(compiled, "second_opinion", None)
                if validate and samples and opinion is not None:  # once per cell, in its first process
                    on_phase("second opinion")
                    row.update(opinion(samples))
        row["lock_wait_s"] = round(waited, 3)
    except Unsupported as e:
        row.update(status="skipped", error=str(e), phase=phase)
    except Exception as e:
        row.update(status="failed", error=error_text(e), phase=phase, traceback="".join(traceback.format_exception(e)))
    finally:
        for c in [compiled, *instances]:
            if c is not None:
                c.release()
    return {"row": row, "samples_ns": samples}


# --- the JSON wire format between a parent and its workers ------------------------------------------


def encode(kind: str, config: Config, info: ModelInfo, **kw: Any) -> dict[str, Any]:
    return {"kind": kind, "config": config.canonical(), "model": info.to_dict(),
            **{k: (str(v) if isinstance(v, Path) else (v.__dict__ if isinstance(v, Cell) else v)) for k, v in kw.items()}}


def execute_job(job: dict[str, Any], on_phase: Callable[[str], None] = lambda phase: None) -> dict[str, Any]:
    config = Config.model_validate(job["config"])
    info = ModelInfo.from_dict(job["model"])
    work = Path(job["work_dir"])
    cache = ArtifactCache(Path(job["cache_dir"]), bool(job["use_cache"]), scratch=work)
    if job["kind"] == "reference":
        return reference_job(config, info, job["batch_size"], Path(job["out_path"]), work, cache)
    return cell_job(
        config, info, Cell(**job["cell"]), job.get("reference_path"), job.get("reference_note"), job["validate"],
        Path(job["outputs_path"]) if job.get("outputs_path") else None, work, cache, on_phase,
        bool(job.get("compile_only")), job.get("run_id"), Path(job["loadgen_dir"]) if job.get("loadgen_dir") else None,
    )


def dumps(obj: Any) -> str:
    return json.dumps(obj, default=str)
