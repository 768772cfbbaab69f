"""The sweep: for each cell of the grid, in a worker process of its own, build the model, compile the
variant, validate it against the reference outputs for the same seeded inputs, and time it; then
compute the statistics here and journal the row at once.

Everything that can be checked cheaply (config, model files, shapes) is checked in `plan` before a
run directory exists. Inside the sweep nothing one cell does (an exception, a segfault, a hang) can
cost another cell. A run interrupted for any reason is finished with `resume`, which refuses a
changed config. The runner talks to backends only through jobs and the protocol they use.
"""

from __future__ import annotations

import contextlib
import functools
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from bench import goldens, layers, loadgen, machine_lock, results
from bench.results import cell_slug
from bench.backends import get_backend
from bench.cache import default_root as default_cache_root
from bench.config import Cell, Config
from bench.errors import BenchError
from bench.inputs import check_image_data
from bench.jobs import encode
from bench.models.flops import cpu_peak
from bench.models.prepare import ModelInfo, inspect_model, quantized_models
from bench.registry import scenario, scenario_flag
from bench.scenarios import get_scenario
from bench.executors import LOCAL, Executor, LocalExecutor
from bench.profiling import Profile
from bench.references import References
from bench.rundir import RunDir
from bench.worker import INTERRUPTS, Outcome, preload_for, run_isolated, run_job


@dataclass(frozen=True)
class Plan:
    config: Config
    models: dict[str, ModelInfo]
    cells: list[Cell]
    config_path: str | None = None


def plan(config: Config, models_dir: Path | str, config_path: str | Path | None = None) -> Plan:
    """Check every model entry and expand the grid. Raises BenchError; writes nothing."""
    config_dir = Path(config_path).resolve().parent if config_path else None
    try:
        infos = {
            m.name: inspect_model(m, i, config.seed, config.batch_sizes, Path(models_dir), config_dir)
            for i, m in enumerate(config.models)
        }
    except BenchError as e:
        raise BenchError(f"{config_path}: {e}" if config_path else str(e)) from None
    for i, m in enumerate(config.models):
        if m.data is not None:
            check_image_data(infos[m.name], m.data, f"models[{i}] ({m.name})")
    missing = loadgen.available() if config.uses_loadgen else None
    if missing:
        raise BenchError(f"{config_path or 'the config'}: scenarios {', '.join(s for s in config.scenarios if scenario(s).loadgen)} "
                         f"run under {missing}")
    if config.goldens is not None and not Path(config.goldens).is_dir():
        raise BenchError(f"goldens: {config.goldens} is not a directory; create it with `bench golden save CONFIG`")
    return Plan(config, infos, config.grid(quantized_models(infos)), str(config_path) if config_path else None)


class Reporter:
    """Receives progress; the CLI draws a progress bar, tests and the Python API pass this no-op."""

    def start(self, total: int, run_id: str) -> None: ...

    def cell(self, index: int, cell: Cell) -> None: ...

    def phase(self, cell: Cell, phase: str) -> None: ...

    def done(self, row: dict[str, Any]) -> None: ...

    def warn(self, message: str) -> None: ...


@dataclass
class _Sweep:
    plan: Plan
    run_id: str
    run_dir: Path
    reporter: Reporter
    isolate: bool
    cache_dir: Path
    use_cache: bool
    executor: Executor = field(default_factory=LocalExecutor)

    @property
    def config(self) -> Config:
        return self.plan.config

    def _run(self, job: dict[str, Any], name: str, cell: Cell | None = None, target: str = LOCAL, timed: bool = True) -> Outcome:
        def on_phase(phase: str) -> None:
            if cell is not None:
                self.reporter.phase(cell, phase)

        if self.isolate:
            return self.executor.run(job, self.run_dir / "work", name, self.config.cell_timeout_s, on_phase,
                                     cell.target if cell is not None else target, timed=timed)
        return run_job(job, on_phase)

    def _log(self, name: str, text: str | None) -> None:
        if text:
            (self.run_dir / "logs").mkdir(exist_ok=True)
            (self.run_dir / "logs" / f"{name}.txt").write_text(text)

    def reference(self, info: ModelInfo, batch: int, target: str = LOCAL) -> tuple[str | None, str | None]:
        """(path to reference outputs, or None and why), computed once per model and batch size (on
        the machine class of the first cell that needs it): bench.references."""
        return self._references.get(info, batch, target)

    @functools.cached_property
    def _references(self) -> References:
        def compute(job: dict[str, Any], name: str, target: str) -> Outcome:
            outcome = self._run(job, name, target=target)
            self._log(name, outcome.traceback)
            return outcome

        return References(self.config, self.run_dir, self.cache_dir, self.use_cache, compute)

    @functools.cached_property
    def peak(self) -> dict[str, Any]:
        return cpu_peak()

    def _cell_run(self, cell: Cell, ref: tuple[str | None, str | None], validate: bool, name: str,
                  process: int = 1) -> tuple[dict[str, Any], list[int], Outcome]:
        info = self.plan.models[cell.model]
        slug = cell_slug(cell)
        job = encode("cell", self.config, info, cell=cell, reference_path=ref[0], reference_note=ref[1], validate=validate, run_id=self.run_id,
                     outputs_path=self.run_dir / "outputs" / f"{slug}.npz" if validate else None,
                     work_dir=self.run_dir / "work", cache_dir=self.cache_dir, use_cache=self.use_cache,
                     scenario_dir=self.run_dir / "loadgen" / slug / f"process{process}" if scenario(cell.scenario).loadgen else None)
        outcome = self._run(job, name, cell)
        if outcome.status != "done":
            part = {"status": outcome.status, "error": outcome.error}
            self._log(name, outcome.traceback)
            return part, [], outcome
        if outcome.value is None:  # the job raised before it could describe the cell
            self._log(name, outcome.traceback)
            return {"status": "failed", "error": outcome.error}, [], outcome
        part = dict(outcome.value["row"])
        self._log(name, part.pop("traceback", None))
        return part, list(outcome.value["samples_ns"]), outcome

    def run_cell(self, cell: Cell) -> tuple[dict[str, Any], list[list[int]]]:
        """A cell from start to row: its first (validating) process, `repeats` - 1 more, then more
        while adaptive repeats ask for them (Config.max_repeats)."""
        state = self.begin_cell(cell)
        while self.wants_more(state):
            self.add_process(state)
        return self.end_cell(state)

    def begin_cell(self, cell: Cell) -> "_CellState":
        """The cell's row, its reference, and its first process (which validates)."""
        cfg = self.config
        tol = cfg.tolerance(cell.precision, cell.model)
        info = self.plan.models[cell.model]
        row: dict[str, Any] = {
            "run_id": self.run_id, "model": cell.model, "backend": cell.backend, "precision": cell.precision,
            "batch_size": cell.batch_size, "scenario": cell.scenario, "streams": cell.streams, "rate": cell.rate, "variant": None, "status": "ok", "error": None, "phase": None,
            "validated": False, "accuracy_ok": None, "atol": tol.atol, "rtol": tol.rtol, "min_cosine": tol.min_cosine,
            "reference": "goldens" if cfg.goldens else f"{cfg.reference.backend}/{cfg.reference.precision}",
            "input_shapes": json.dumps(info.shapes(cell.batch_size)), "repeats": 0, "target": cell.target,
        }
        self.reporter.phase(cell, "reference")
        ref = self.reference(info, cell.batch_size, cell.target)
        part, samples, outcome = self._cell_run(cell, ref, validate=True, name=cell_slug(cell))
        state = _CellState(cell, row, ref)
        if "scenario_figures" in part:
            state.figures.append(part.pop("scenario_figures"))
        row.update(part)
        state.outcomes.append(outcome)
        if samples:
            state.per_process.append(samples)
        return state

    def add_process(self, state: "_CellState") -> None:
        """One more timed process of a cell that is ok so far; a failure ends the cell with its status."""
        r = len(state.outcomes)
        part, more, outcome = self._cell_run(state.cell, state.ref, validate=False, name=f"{cell_slug(state.cell)}-repeat{r}",
                                             process=r + 1)
        state.outcomes.append(outcome)
        if part["status"] != "ok":
            state.row.update(status=part["status"], error=f"repeat {r + 1}: {part['error']}", phase=part.get("phase"))
            return
        if "scenario_figures" in part:
            state.figures.append(part["scenario_figures"])
        state.per_process.append(more)

    def wants_more(self, state: "_CellState") -> bool:
        """Another process for this cell: below `repeats`, or below `max_repeats` while the
        median's interval is wider than `interval_target` (adaptive repeats; interval_width)."""
        n, cfg = len(state.outcomes), self.config
        if not state.ok or n >= max(cfg.repeats, cfg.max_repeats or 0):
            return False
        if n < cfg.repeats:
            return True
        return n >= 2 and state.latency_samples and state.width() > cfg.interval_target

    def end_cell(self, state: "_CellState") -> tuple[dict[str, Any], list[list[int]]]:
        """The row's statistics and where its processes ran."""
        row, cfg = state.row, self.config
        row.update(placement_columns([o.placement for o in state.outcomes if o.placement]))
        known = [o.peak_rss_mb for o in state.outcomes if o.peak_rss_mb is not None]
        row["peak_rss_mb"] = max(known) if known else None
        starts = [o.ready_s for o in state.outcomes if o.ready_s is not None]
        row["worker_ready_s"] = max(starts) if starts else None  # slowest worker start, isolated runs
        row.update(get_scenario(state.cell.scenario).summarize(row, state.figures, state.per_process, cfg, self.peak))
        row["repeats_stop"] = repeats_stop(state, cfg)
        if cfg.profile and state.ok and not self.wants_more(state) and not INTERRUPTS.requested:
            try:
                row.update(self.profile(state.cell, row))
            except KeyboardInterrupt:  # the timed row is journaled; the sweep stops at its next check, after it
                row["profile_error"] = "interrupted"
                INTERRUPTS.requested = True
            except Exception as e:  # the timed row is kept whatever its profile does
                row["profile_error"] = f"{type(e).__name__}: {e}"
        return row, state.per_process

    def profile(self, cell: Cell, row: dict[str, Any]) -> dict[str, Any]:
        """The cell's per-layer profile, in a process of its own after its timed ones, saved beside the
        run's rows (bench.layers); the row's profile columns."""
        job = encode("profile", self.config, self.plan.models[cell.model], cell=cell, work_dir=self.run_dir / "work",
                     cache_dir=self.cache_dir, use_cache=self.use_cache, run_id=self.run_id)
        self.reporter.phase(cell, "profile")
        name = f"{cell_slug(cell)}-profile"
        outcome = self._run(job, name, cell, timed=False)
        if outcome.status == "done" and outcome.value is not None:
            result = outcome.value
        else:
            self._log(name, outcome.traceback)
            unsupported = outcome.status == "done" and str(outcome.error).startswith(("Unsupported:", "ConversionRefused:"))
            result = {"status": "skipped" if unsupported else ("failed" if outcome.status == "done" else outcome.status),
                      "error": outcome.error}
        layers.save(self.run_dir, {**row, "variant": result.get("variant", row.get("variant"))}, result)
        if "profile" not in result:
            return {"profile_error": result["error"]}
        p = Profile.from_dict(result["profile"])
        return {"profile_coverage": round(p.coverage, 4), "profile_mapped": round(p.mapped, 4), "profile_of_latency": round(p.of_latency, 4),
                "profile_overhead": round(p.overhead, 3),
                "profile_note": p.note or None}


@dataclass
class _CellState:
    """A cell between its first process and its row."""

    cell: Cell
    row: dict[str, Any]
    ref: tuple[str | None, str | None]
    per_process: list[list[int]] = field(default_factory=list)
    figures: list[Any] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    _width: tuple[int, float] = (0, float("inf"))  # interval_width for that many processes, computed once

    def width(self) -> float:
        """interval_width of the processes so far (a bootstrap: asked by wants_more and repeats_stop alike)."""
        if self._width[0] != len(self.per_process):
            self._width = (len(self.per_process), interval_width(self.per_process))
        return self._width[1]

    @property
    def ok(self) -> bool:
        return self.row["status"] == "ok"

    @property
    def latency_samples(self) -> bool:
        """Every process gave per-call latencies (what adaptive repeats judge), not a throughput
        scenario's service times (its figure is each process's samples per second)."""
        return len(self.per_process) == len(self.outcomes) and not scenario_flag(self.cell.scenario, "throughput")


def interval_width(per_process: list[list[int]]) -> float:
    """Half the width of the median's 95% interval, relative to the median (bench.timing)."""
    from bench.timing import hierarchical_ci

    import numpy as np

    procs = [np.asarray(p, dtype=np.float64) for p in per_process if len(p)]
    if not procs or sum(p.size for p in procs) < 2:
        return float("inf")
    lo, hi = hierarchical_ci(procs)
    return (hi - lo) / 2 / float(np.median(np.concatenate(procs)))


def repeats_stop(state: _CellState, cfg: Config) -> str:
    """Why the cell has the processes it has (the row's `repeats_stop`)."""
    n = len(state.outcomes)
    if not state.ok:
        return f"stopped after {n} processes: {state.row['status']}"
    if not cfg.max_repeats or cfg.max_repeats <= cfg.repeats:
        return f"fixed: {n} processes (repeats)"
    if not state.latency_samples:
        return f"fixed: {n} processes (adaptive repeats judge per-call latencies; this cell's figure is a throughput)"
    width = state.width()
    if width <= cfg.interval_target:
        return f"adaptive: interval +-{width:.1%} within +-{cfg.interval_target:.1%} after {n} processes"
    return f"adaptive: max_repeats {n} reached with interval +-{width:.1%} (asked +-{cfg.interval_target:.1%})"


def placement_columns(placed: list[dict[str, Any]]) -> dict[str, Any]:
    """Where a cell's processes ran: `host` and `worker` (the first's), `placements` (each process's
    worker, start and end, epoch seconds), `resumable` when the executor lost the machine mid-cell."""
    if not placed:
        return {}
    out: dict[str, Any] = {"host": placed[0].get("host"), "worker": placed[0].get("worker")}
    prints = {p["fingerprint"]["hash"]: p["fingerprint"] for p in placed if p.get("fingerprint")}
    if prints:  # a fleet: the machine's environment, as meta.json holds the driver's
        out["env_fingerprint"] = ",".join(prints)
        out["host_environment"] = json.dumps(next(iter(prints.values())))
    spans = [{k: p[k] for k in ("worker", "started_at", "ended_at") if k in p} for p in placed if "started_at" in p]
    if spans:
        out["placements"] = json.dumps(spans)
    if any(p.get("resumable") for p in placed):
        out["resumable"] = True
    return out


def backend_preloads(names: list[str]) -> list[str]:
    """The modules the named backends ask the worker fork server to import (`preload`)."""
    out: list[str] = []
    for name in dict.fromkeys(names):
        try:
            out += list(type(get_backend(name)).preload)
        except Exception:  # a backend that fails to load says so in its cells
            continue
    return out


def execute(
    p: Plan,
    results_dir: Path | str,
    reporter: Reporter | None = None,
    run_id: str | None = None,
    isolate: bool = True,
    resume: bool = False,
    cache_dir: Path | str | None = None,
    use_cache: bool = True,
    wait: bool = True,
    executor: Executor | None = None,
    shard: tuple[int, int] | None = None,
) -> Path:
    """Run the plan's cells (with `resume`, only those run `run_id` lacks, or lost to a fleet
    worker); returns the run directory. `executor` decides where each cell's worker runs (default:
    this machine; bench.executors), several cells at once when it offers several timing slots.
    `shard=(i, n)` runs the i-th of n deterministic slices of the grid (1-based), for `bench merge`.
    With `wait=False`, refuse to start while another run on this machine is timing (by default a
    cell waits for the machine's timing lock; see bench.machine_lock).

    Ctrl-C (KeyboardInterrupt) keeps every finished cell and marks the run interrupted."""
    reporter = reporter or Reporter()
    executor = executor or LocalExecutor()
    cells = shard_cells(p.cells, shard)
    _check_targets(executor, cells, isolate)
    _check_machine(wait)
    preload_for(backend_preloads([*p.config.backends, p.config.reference.backend]))
    run = RunDir.open(p, Path(results_dir), run_id, resume, cells, isolate, shard)
    try:
        todo = run.pending(cells, reporter.warn)
        run.begin(resume)
        sweep = _Sweep(p, run.meta["run_id"], run.path, reporter, isolate, Path(cache_dir) if cache_dir else default_cache_root(),
                       use_cache, executor)
        _sweep(sweep, todo, executor.parallelism if isolate else 1, isolate, run)
    finally:
        run.lock.release()
    return run.path


def _check_targets(executor: Executor, cells: list[Cell], isolate: bool) -> None:
    offered = executor.targets() if isolate else {LOCAL}
    wanted = sorted({c.target for c in cells})
    if offered is not None and not set(wanted) <= offered:
        lacking = [t for t in wanted if t not in offered]
        raise BenchError(f"targets {', '.join(lacking)}: no worker offers them (available: {', '.join(sorted(offered)) or 'none'}); "
                         + ("targets other than local run on a fleet: --executor dask --scheduler ADDRESS"
                            if offered == {LOCAL} else "start a Dask worker with --resources \"bench_slot=1,<target>=1\""))


def _check_machine(wait: bool) -> None:
    if not wait:
        who = machine_lock.holder()
        if who:
            raise BenchError(f"another bench run is timing on this machine ({who}); two timed cells on the same cores corrupt "
                             "both figures. Run again when it is done, or without --no-wait to queue behind it")


def _sweep(sweep: "_Sweep", todo: list[Cell], slots: int, isolate: bool, run: RunDir) -> None:
    """Every pending cell, journaled as it finishes; the run closed whatever happens."""
    sweep.reporter.start(len(todo), run.meta["run_id"])
    if sweep.config.interleave and slots > 1:
        sweep.reporter.warn(f"interleave: ignored with {slots} cells in flight at once (a fleet's slots); cells run as they are placed")
    with closing_runs([run], isolate):
        if slots > 1:
            _sweep_concurrently(sweep, todo, slots)
        elif sweep.config.interleave:
            _sweep_interleaved(sweep, todo)
        else:
            for i, cell in enumerate(todo):
                INTERRUPTS.check()
                sweep.reporter.cell(i, cell)
                _journal(sweep, *sweep.run_cell(cell))
        INTERRUPTS.check()  # an interrupt during the last cell's profile: its row is kept, the run says interrupted


@contextlib.contextmanager
def closing_runs(runs: list[RunDir], isolate: bool) -> Iterator[None]:
    """Signals become interrupts while the body runs (isolated runs); then every run is closed
    with the status the body ended in (complete, interrupted or failed: never left `running`),
    each close tried whatever another's did."""
    interrupts = INTERRUPTS.install() if isolate else None
    status, error = "failed", None
    try:
        yield
        status = "complete"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    except BaseException as e:
        error = e
        raise
    finally:
        if interrupts is not None:
            interrupts.uninstall()
        INTERRUPTS.requested = False  # also set without signal handlers: a Ctrl-C during a cell's profile
        failures = []
        for run in runs:
            try:
                run.close(status, error)
            except Exception as e:  # the other runs still close
                failures.append(e)
        if failures and error is None and status == "complete":
            raise failures[0]


@contextlib.contextmanager
def open_runs(specs: list[tuple[Plan, str, list[Cell]]], results_dir: Path, isolate: bool) -> Iterator[list[RunDir]]:
    """New runs, one per (plan, run id, cells), open together: closed as closing_runs does and their
    locks released whatever happens; when one cannot be opened, those already opened are removed."""
    runs: list[RunDir] = []
    try:
        try:
            for p, run_id, cells in specs:
                runs.append(RunDir.open(p, results_dir, run_id, False, cells, isolate, None))
        except BaseException:
            for run in runs:
                shutil.rmtree(run.path, ignore_errors=True)  # never begun: an empty directory
            raise
        with closing_runs(runs, isolate):
            yield runs
    finally:
        for run in runs:
            run.lock.release()


def _sweep_interleaved(sweep: _Sweep, todo: list[Cell]) -> None:
    """Random interleaving (as Google Benchmark's): each cell's first process, which validates, in
    grid order; then rounds of one more process for every cell that wants one (repeats, adaptive
    repeats), in an order shuffled each round (seeded by the config's seed), so that drift over the
    sweep hits every cell alike. A cell is journaled once it wants no more processes; on an
    interruption every started cell is journaled with the processes it has, and one that wanted
    more is marked resumable (`repeats_stop` says so), so that `--resume` runs it again."""
    import random

    rng = random.Random(sweep.config.seed)
    live: list[_CellState] = []
    try:
        for i, cell in enumerate(todo):
            INTERRUPTS.check()
            sweep.reporter.cell(i, cell)
            live.append(sweep.begin_cell(cell))
        while live:
            for s in [s for s in live if not sweep.wants_more(s)]:
                live.remove(s)
                _journal(sweep, *sweep.end_cell(s))
            rng.shuffle(live)
            for s in live:
                INTERRUPTS.check()
                sweep.add_process(s)
    finally:
        for s in live:  # interrupted (or failing): keep what was measured; a cell that wanted more runs again on resume
            unfinished = sweep.wants_more(s)
            row, samples = sweep.end_cell(s)
            if unfinished:
                row.update(repeats_stop=f"interrupted after {len(s.outcomes)} processes (resume runs the cell again)", resumable=True)
            _journal(sweep, row, samples)


def _journal(sweep: _Sweep, row: dict[str, Any], samples: list[list[int]]) -> None:
    results.append_cell(sweep.run_dir, row, samples)
    sweep.reporter.done(row)


def shard_cells(cells: list[Cell], shard: tuple[int, int] | None) -> list[Cell]:
    """The i-th of n slices of the grid (1-based): every n-th cell from the i-th, in grid order, so
    each shard gets a share of every model and backend; the same for every machine and run."""
    if shard is None:
        return cells
    i, n = shard
    if not 1 <= i <= n:
        raise BenchError(f"--shard {i}/{n}: I must be between 1 and N")
    return cells[i - 1::n]


def _sweep_concurrently(sweep: _Sweep, todo: list[Cell], slots: int) -> None:
    """Cells in flight at once: for each machine class, as many as its workers have timing slots, so
    no class waits while another's cells queue; rows are journaled here, in the order they finish.
    Ctrl-C cancels what is in flight and keeps what finished."""
    from collections import deque
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    queues: dict[str, deque[tuple[int, Cell]]] = {}
    for i, cell in enumerate(todo):
        queues.setdefault(cell.target, deque()).append((i, cell))
    limit = {t: sweep.executor.slots(t) for t in queues}
    busy = dict.fromkeys(queues, 0)
    pool = ThreadPoolExecutor(max_workers=max(slots, sum(limit.values())), thread_name_prefix="bench-cell")
    pending: dict[Any, Cell] = {}
    try:
        while pending or any(queues.values()):
            for target, q in queues.items():
                while q and busy[target] < limit[target]:
                    i, cell = q.popleft()
                    sweep.reporter.cell(i, cell)
                    pending[pool.submit(sweep.run_cell, cell)] = cell
                    busy[target] += 1
            INTERRUPTS.check()
            finished, _ = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            for fut in finished:
                busy[pending.pop(fut).target] -= 1
                _journal(sweep, *fut.result())
    finally:
        for fut in pending:
            fut.cancel()
        pool.shutdown(wait=False, cancel_futures=True)


def save_goldens(p: Plan, out_dir: Path | str, isolate: bool = True, cache_dir: Path | str | None = None) -> list[Path]:
    """Store the reference outputs for every model and batch size of the plan (see bench.goldens)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for model, batch in dict.fromkeys((c.model, c.batch_size) for c in p.cells):
        info = p.models[model]
        path = out / goldens.file_name(model, batch)
        job = encode("reference", p.config, info, batch_size=batch, out_path=path, work_dir=out / ".work",
                     cache_dir=Path(cache_dir) if cache_dir else default_cache_root(), use_cache=True)
        name = f"golden-{model}-b{batch}"
        outcome = run_isolated(job, out / ".work", name, p.config.cell_timeout_s) if isolate else run_job(job)
        if outcome.status != "done" or outcome.error:
            raise BenchError(f"golden outputs for {model} batch {batch} failed ({outcome.status}): {outcome.error}")
        written.append(path)
    shutil.rmtree(out / ".work", ignore_errors=True)
    return written


def compile_all(p: Plan, work_dir: Path | str, reporter: Reporter | None = None, cache_dir: Path | str | None = None,
                isolate: bool = True, executor: Executor | None = None) -> list[dict[str, Any]]:
    """Compile every cell into the artifact cache (tuning where a backend tunes), timing nothing; on
    a fleet, each job asks for a worker's compile_slot instead of its bench_slot."""
    reporter = reporter or Reporter()
    work = Path(work_dir)
    sweep = _Sweep(p, "compile", work, reporter, isolate, Path(cache_dir) if cache_dir else default_cache_root(), True,
                   executor or LocalExecutor())
    preload_for(backend_preloads(list(p.config.backends)))
    rows = []
    reporter.start(len(p.cells), "compile")
    for i, cell in enumerate(p.cells):
        reporter.cell(i, cell)
        job = encode("cell", p.config, p.models[cell.model], cell=cell, reference_path=None, reference_note=None,
                     validate=False, outputs_path=None, work_dir=work, cache_dir=sweep.cache_dir, use_cache=True,
                     compile_only=True)
        outcome = sweep._run(job, f"compile-{cell_slug(cell)}", cell, timed=False)
        row = {"model": cell.model, "backend": cell.backend, "precision": cell.precision, "batch_size": cell.batch_size,
               "scenario": cell.scenario, "streams": cell.streams, "rate": cell.rate, "target": cell.target}
        if outcome.status == "done" and outcome.value is not None:
            row.update({k: v for k, v in outcome.value["row"].items() if k != "traceback"})
        else:
            row.update(status="failed" if outcome.status == "done" else outcome.status, error=outcome.error)
        rows.append(row)
        reporter.done(row)
    return rows


def profile_run(run_dir: Path | str, models_dir: Path | str, filters: dict[str, str] | None = None, reporter: Reporter | None = None,
                cache_dir: Path | str | None = None, isolate: bool = True) -> list[dict[str, Any]]:
    """Profile a stored run's ok cells (those matching `filters`) after the fact, into its profiles/
    and layers.parquet; returns each cell's profile columns. The run's rows are not rewritten."""
    from bench.results import cell_key, load_run

    run = load_run(run_dir)
    cfg = Config.model_validate(run.meta["config"])
    p = plan(cfg, models_dir, run.meta.get("config_path"))
    rows = [r for r in run.cells.to_dict("records") if r.get("status") == "ok"
            and all(str(r.get(k)) == v for k, v in (filters or {}).items())]
    if not rows:
        raise BenchError(f"{run_dir}: no ok cell matches {filters or 'the run'}")
    reporter = reporter or Reporter()
    sweep = _Sweep(p, run.run_id, Path(run_dir), reporter, isolate, Path(cache_dir) if cache_dir else default_cache_root(), True)
    preload_for(backend_preloads(sorted({r["backend"] for r in rows})))
    reporter.start(len(rows), run.run_id)
    out = []
    fd = results.try_run_lock(Path(run_dir))
    if fd is None:
        raise BenchError(f"{run_dir}: another process holds this run (a sweep still running?); profile it when that is done")
    try:
        for i, r in enumerate(rows):
            cell = Cell(*cell_key(r))
            reporter.cell(i, cell)
            part = {k: r[k] for k in ("model", "backend", "precision", "batch_size")}
            try:
                part.update(sweep.profile(cell, r))
            except Exception as e:  # one cell's profile never costs the others theirs
                part["profile_error"] = f"{type(e).__name__}: {e}"
            reporter.done({**r, **part})
            out.append(part)
    finally:
        results.release_run_lock(fd)
    return out
