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

from dataclasses import dataclass

from bench import goldens, machine_lock
from bench.backends import get_backend
from bench.backends.base import COMPILED_MEMBERS, Backend, Compiled, CompileRequest, Feeds, Unsupported, lacking
from bench.cache import ArtifactCache
from bench.config import AS_GIVEN, Cell, Config
from bench.inputs import calibration_overlap, calibration_set, validation_feeds
from bench.models.prepare import ModelInfo, PreparedModel, for_cell, materialize
from bench.registry import scenario as scenario_spec
from bench.scenarios import Prepared, TimedCell, get_scenario
from bench.precision import ConversionRefused, where_raised
from bench.validate import compare, run_outputs


ERROR_HEAD, ERROR_TAIL = 300, 300  # characters of a long message kept in the row, from each end


def error_text(exc: BaseException) -> str:
    """The row's `error`: the exception's type and message on one line. A long message keeps its head
    (what failed) and its tail (compilers and validators put the cause last); the whole of it is in
    the cell's log, with the traceback."""
    message = " ".join(str(exc).split())
    # a bare `assert` in a library says nothing but where it stopped: say that
    text = f"{type(exc).__name__}: {message}" if message else where_raised(exc)
    if len(text) <= ERROR_HEAD + ERROR_TAIL + 40:
        return text
    cut = len(text) - ERROR_HEAD - ERROR_TAIL
    return f"{text[:ERROR_HEAD]} [... {cut} characters; the whole message is in the cell's log ...] {text[-ERROR_TAIL:]}"


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
    calib_batch, skip = batch, validation_images(config)
    return CompileRequest(
        model, precision, batch, model.info.shapes(batch), config.threads_per_stream(backend.name, streams), work, cache,
        calibration=lambda: calibration_set(model.info, config.model(model.name).data, config.seed, config.calibration.samples,
                                            calib_batch, skip),
        options=config.backend_options.get(backend.name, {}), batch_sizes=tuple(config.batch_sizes),
    )


def validation_images(config: Config) -> int:
    """How many images of a folder validation may use at any batch size of the grid: calibration
    starts after them (bench.inputs.calibration_set)."""
    return max(config.batch_sizes) * config.validation.iterations


def prepared_facts(source: PreparedModel, prepared: PreparedModel) -> dict[str, Any]:
    """What a row records of the model: the file the config named, and what the backend got."""
    return {"model_sha256": source.sha256, "prepared_sha256": prepared.sha256, "gflop": prepared.facts.get("gflop"),
            "prepared_nodes": f"{prepared.facts.get('nodes_before')} -> {prepared.facts.get('nodes_after')}",
            "preparation": prepared.facts.get("preparation")}


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


@dataclass
class CellJob:
    """One cell's work as the planner describes it to a worker: the JSON wire form is `encode`'s
    (`execute_job` reads it back into this)."""

    config: Config
    info: ModelInfo
    cell: Cell
    work_dir: Path
    cache: ArtifactCache
    validate: bool = True  # the cell's first process validates (and stores outputs); repeats only time
    reference_path: str | None = None
    reference_note: str | None = None  # why there is no reference, when there is none
    outputs_path: Path | None = None
    compile_only: bool = False
    run_id: str | None = None  # named in the machine's timing lock while this cell holds it
    scenario_dir: Path | None = None  # where the scenario writes its logs (LoadGen's), per process


def cell_job(job: CellJob, on_phase: Callable[[str], None] = lambda phase: None) -> dict[str, Any]:
    """Build, compile, validate (when asked) and time one cell. Returns {"row": {...}, "samples_ns": [...]}.

    The row holds what this process learned; timing statistics are the parent's to compute."""
    cell = job.cell
    row: dict[str, Any] = {"status": "ok", "error": None, "phase": None}
    samples: list[int] = []
    backend = get_backend(cell.backend)
    row["variant"] = backend.variant
    row["model_builder"] = job.info.builder if job.info.arch else ""  # known before anything is built
    skip = _cannot_build(backend, cell, job.info)
    if skip:
        row.update(status="skipped", error=skip)
        return {"row": row, "samples_ns": samples}
    phase = "build"
    compiled: Compiled | None = None
    prepared: Prepared | None = None
    try:
        on_phase(phase)
        source = materialize(job.info)
        row["model_sha256"] = source.sha256
        phase = "prepare"
        on_phase(phase)
        model = for_cell(source, cell.batch_size, job.cache, backend.keeps_dynamic_batch)
        row.update(prepared_facts(source, model))
        phase = "compile"
        on_phase(phase)
        request, compiled = _compile(job, backend, model, row)
        if job.compile_only:
            return {"row": row, "samples_ns": samples}
        if compiled.cannot_run:
            raise Unsupported(compiled.cannot_run)
        feeds = validation_feeds(job.info, job.config.model(cell.model).data, cell.batch_size, job.config.seed,
                                 job.config.validation.iterations)
        if job.validate:
            phase = "validate"
            on_phase(phase)
            row.update(_validate(job, source, compiled, feeds))
            row.update(_calibration_overlap(job, row.get("accuracy_note")))
        phase = "loadgen" if scenario_spec(cell.scenario).loadgen else "time"
        scenario = get_scenario(cell.scenario)
        prepared = scenario.prepare(TimedCell(cell, job.config, backend, request, compiled, feeds, on_phase,
                                              job.scenario_dir or job.work_dir / cell.scenario))
        row.update(prepared.facts)
        samples = _timed(job, compiled, prepared, row, on_phase, phase)
    except (Unsupported, ConversionRefused) as e:
        row.update(status="skipped", error=str(e), phase=phase)
    except Exception as e:
        row.update(status="failed", error=error_text(e), phase=phase, traceback="".join(traceback.format_exception(e)))
    finally:
        for c in [compiled, *(prepared.instances if prepared else [])]:
            if c is not None:
                c.release()
    return {"row": row, "samples_ns": samples}


def profile_job(config: Config, info: ModelInfo, cell: Cell, work_dir: Path, cache: ArtifactCache, run_id: str | None = None) -> dict[str, Any]:
    """One cell's per-layer profile (bench.profiling) from its engine's own profiler, on the first
    validation input, in this process (never one that times), inside the machine's timing lock."""
    backend = get_backend(cell.backend)
    skip = _cannot_build(backend, cell, info)
    if skip:
        raise Unsupported(skip)
    model = for_cell(materialize(info), cell.batch_size, cache, backend.keeps_dynamic_batch)
    compiled = backend.compile(_request(config, backend, model, cell.precision, cell.batch_size, work_dir, cache, cell.streams))
    try:
        profile = getattr(compiled, "profile", None)
        if profile is None:
            raise Unsupported(f"{cell.backend} has no per-layer profiler")
        if compiled.cannot_run:
            raise Unsupported(compiled.cannot_run)
        feeds = validation_feeds(info, config.model(cell.model).data, cell.batch_size, config.seed, 1)[0]
        with machine_lock.timing(f"run {run_id or '?'}, profile of {cell.label}", lambda who: None):
            result = profile(feeds)
    finally:
        compiled.release()
    # what was profiled: the timed artifact when the cache held it (cache_hit), else one built again for the profile
    result.facts.update(cache_hit=compiled.facts.get("cache_hit"), provider=compiled.facts.get("provider"))
    return {"profile": result.to_dict(), "variant": compiled.facts.get("variant", backend.variant)}


def _cannot_build(backend: Backend, cell: Cell, info: ModelInfo) -> str | None:
    avail = backend.availability()
    if not avail.usable:
        return f"{cell.backend} unavailable: {avail.reason}"
    if info.quantized and cell.precision != AS_GIVEN:
        return (f"{cell.precision} conversion skipped: {info.name} arrives quantized ({info.quantized}); "
                f"it runs as given in its {AS_GIVEN!r} cells")
    if cell.precision != AS_GIVEN and cell.precision not in backend.precisions:
        return f"{cell.backend} does not build {cell.precision}; it builds {', '.join(backend.precisions)}"
    return None


def _compile(job: CellJob, backend: Backend, model: PreparedModel, row: dict[str, Any]) -> tuple[CompileRequest, Compiled]:
    t0 = time.perf_counter()
    request = _request(job.config, backend, model, job.cell.precision, job.cell.batch_size, job.work_dir, job.cache, job.cell.streams)
    try:
        compiled = backend.compile(request)
    finally:
        row.update(request.notes)  # how the graph was converted, whether or not it compiled
    why = lacking(compiled, COMPILED_MEMBERS, f"{job.cell.backend}'s compiled variant", "CompiledBase")
    if why:
        compiled_release = getattr(compiled, "release", None)
        if compiled_release is not None:
            compiled_release()
        raise TypeError(why)
    row["compile_s"] = time.perf_counter() - t0
    row.update(compiled.facts)
    return request, compiled


def _validate(job: CellJob, source: PreparedModel, compiled: Compiled, feeds: list[Feeds]) -> dict[str, Any]:
    """Outputs on the seeded inputs (stored when asked), judged against the reference's."""
    config, cell = job.config, job.cell
    outputs = run_outputs(compiled, cell.label, feeds)
    if job.outputs_path is not None:
        goldens.save(job.outputs_path, goldens.from_run_results(outputs),
                     {**output_meta(config, source, cell.batch_size), "producer": f"{cell.backend}/{cell.precision}"})
    if job.reference_path is None:
        return {"accuracy_note": job.reference_note or "no reference"}
    stored = goldens.load(Path(job.reference_path))
    stale = stored.mismatch(output_meta(config, source, cell.batch_size))
    if stale:
        return {"accuracy_note": f"reference outputs do not match this model's inputs: {stale}"}
    reference = stored.run_results(f"reference:{stored.meta.get('producer')}")
    tol = config.tolerance(cell.precision, cell.model)
    per_output = {o: config.tolerance(cell.precision, cell.model, o) for o in config.model(cell.model).output_tolerances}
    drift = compare(reference, outputs, tol, job.info.task, per_output)
    return {**drift.as_row(), "validated": True, "accuracy_note": drift.reason or None}


def _calibration_overlap(job: CellJob, note: str | None) -> dict[str, Any]:
    """An int8 cell calibrated on images validation also uses (a folder too small for both) says so:
    its accuracy is flattered."""
    data = job.config.model(job.cell.model).data
    if job.cell.precision != "int8" or data is None:
        return {}
    skip = validation_images(job.config)
    n = calibration_overlap(data, job.config.calibration.samples, skip)
    if not n:
        return {"calibration_overlap": 0}
    why = (f"int8 calibrated on {n} of the validation images (the folder holds fewer than {skip} + "
           f"{job.config.calibration.samples}): its accuracy is flattered")
    return {"calibration_overlap": n, "accuracy_note": f"{note}; {why}" if note else why}


def _timed(job: CellJob, compiled: Compiled, prepared: Prepared, row: dict[str, Any], on_phase: Callable[[str], None],
           phase: str) -> list[int]:
    """The scenario's run inside the machine's timing lock (and, for per-call samples, a second
    opinion, once per cell)."""
    on_phase(phase)
    with machine_lock.timing(f"run {job.run_id or '?'}, cell {job.cell.label}",
                             lambda who: on_phase(f"waiting to time: the machine's timing lock is held by {who}")) as waited:
        on_phase(phase)
        figures, samples = prepared.run()
        if figures:
            row["scenario_figures"] = figures
        if job.validate and samples and prepared.comparable_calls:  # once per cell, in its first process
            on_phase("second opinion")
            row.update(compiled.second_opinion(samples))
    row["lock_wait_s"] = round(waited, 3)
    return samples


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
    if job["kind"] == "profile":
        return profile_job(config, info, Cell(**job["cell"]), work, cache, job.get("run_id"))
    path = lambda key: Path(job[key]) if job.get(key) else None  # noqa: E731
    return cell_job(CellJob(config, info, Cell(**job["cell"]), work, cache, validate=job["validate"],
                            reference_path=job.get("reference_path"), reference_note=job.get("reference_note"),
                            outputs_path=path("outputs_path"), compile_only=bool(job.get("compile_only")),
                            run_id=job.get("run_id"), scenario_dir=path("scenario_dir")), on_phase)


def dumps(obj: Any) -> str:
    return json.dumps(obj, default=str)
