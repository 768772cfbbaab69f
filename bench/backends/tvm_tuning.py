"""MetaSchedule tuning that covers the whole model: the budget spread over every task, one builder
pool for the whole run, progress and a tuning curve as it goes.

MetaSchedule's own task scheduler spends a global budget where its gradient points, and with a
small budget most tasks get no trial at all (measured: 16 of MobileNetV2's 33 tasks untuned after
256 trials; those tasks ran TVM's fallback code and were most of the latency). Here every task
gets a share of the budget, weighted by the task's weight (how often it occurs) times its FLOPs,
never less than `min_trials_per_task`; each task is then tuned on its own, with the same builder
and runner pools and the same database.

TVM's LocalBuilder starts a fresh pool of worker processes for every batch of trials, and each
worker imports tensor intrinsics on start (about 30 s on a 2-core machine): a batch of trials paid
a pool start. `PersistentBuilder` starts its pool once per tuning run and restarts it only every
`restart_every` batches (LocalBuilder restarts it because long-lived workers leak memory).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

CURVE = "tuning_curve.json"
TASKS = "tuning_tasks.json"


def allocate_trials(scores: Sequence[float], budget: int, minimum: int) -> list[int]:
    """Trials per task: `minimum` each, the rest of `budget` in proportion to `scores` (largest
    remainders get the leftovers), so the total is exactly max(budget, minimum x tasks)."""
    n = len(scores)
    if n == 0:
        return []
    base = [minimum] * n
    rest = budget - minimum * n
    if rest <= 0:
        return base
    total = sum(max(s, 0.0) for s in scores)
    shares = [rest * (max(s, 0.0) / total if total > 0 else 1 / n) for s in scores]
    alloc = [b + math.floor(s) for b, s in zip(base, shares)]
    leftover = budget - sum(alloc)
    for i in sorted(range(n), key=lambda i: shares[i] - math.floor(shares[i]), reverse=True)[:leftover]:
        alloc[i] += 1
    return alloc


def _make_persistent_builder() -> Any:
    from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder
    from tvm.s_tir.meta_schedule.builder.local_builder import _serialize_params, _worker_func
    from tvm.ir.utils import derived_object
    from tvm.support.popen_pool import PopenPoolExecutor, StatusKind

    @derived_object
    class PersistentBuilder(PyBuilder):
        """LocalBuilder's work, with one worker pool reused across batches."""

        def __init__(self, max_workers: int, timeout_sec: float, initializer: Any, restart_every: int = 16):
            super().__init__()
            self.max_workers, self.timeout_sec, self.initializer = max_workers, timeout_sec, initializer
            self.restart_every, self.batches, self.pool_starts = restart_every, 0, 0
            self.f_build = self.f_export = None
            self._pool: Any = None

        def _get_pool(self) -> Any:
            if self._pool is None or self.batches % self.restart_every == 0 and self.batches:
                if self._pool is not None:
                    self._pool.shutdown()
                self._pool = PopenPoolExecutor(max_workers=self.max_workers, timeout=self.timeout_sec,
                                               initializer=self.initializer)
                self.pool_starts += 1
            return self._pool

        def build(self, build_inputs: list) -> list:
            pool = self._get_pool()
            self.batches += 1
            results = []
            for r in pool.map_with_error_catching(
                lambda x: _worker_func(*x),
                [(self.f_build, self.f_export, b.mod, b.target, _serialize_params(b.params)) for b in build_inputs],
            ):
                if r.status == StatusKind.COMPLETE:
                    results.append(BuilderResult(r.value, None))
                elif r.status == StatusKind.TIMEOUT:
                    results.append(BuilderResult(None, f"PersistentBuilder: Timeout, killed after {self.timeout_sec} seconds"))
                else:
                    results.append(BuilderResult(None, "PersistentBuilder: An exception occurred\n" + str(r.value)))
            return results

        def shutdown(self) -> None:
            if self._pool is not None:
                self._pool.shutdown()
                self._pool = None

    return PersistentBuilder


def _task_flops(task: Any) -> float | None:
    """A task's FLOPs, or None when TVM cannot estimate them (never a made-up figure)."""
    from tvm.s_tir.analysis import estimate_tir_flops

    try:
        return float(estimate_tir_flops(task.dispatched[0]))
    except Exception:
        return None


def task_scores(weights: Sequence[int], flops: Sequence[float | None]) -> tuple[list[float], int]:
    """Each task's share of the budget, weight x FLOPs; a task whose FLOPs are unknown is scored at
    the median FLOPs of the others (not at 1.0, which would starve it of trials). Returns the scores
    and how many tasks had no estimate."""
    known = sorted(f for f in flops if f is not None and f > 0)
    typical = known[len(known) // 2] if known else 1.0
    unknown = sum(1 for f in flops if f is None or f <= 0)
    return [w * (f if f is not None and f > 0 else typical) for w, f in zip(weights, flops)], unknown


def _best_seconds(database: Any, task: Any) -> float | None:
    mod = task.dispatched[0]
    if not database.has_workload(mod):
        return None
    top = database.get_top_k(database.commit_workload(mod), 1)
    if not top or not top[0].run_secs:
        return None
    secs = [float(x) for x in top[0].run_secs]
    best = sum(secs) / len(secs)
    return None if best >= 1e9 else best


@dataclass(frozen=True)
class TuneJob:
    """One tuning run, as the backend hands it to its tuning process (pickled): the model to import
    again there, the target, the database and the budget (bench.options.TunedOptions) to spend."""

    onnx_path: str
    shapes: dict[str, list[int]]
    target_json: str
    db_dir: str
    trials: int  # to spend now (the budget less what the database already holds)
    min_per_task: int
    per_iter: int
    builder_timeout_s: int
    threads: int
    search: str = "evolutionary"
    weighting: str = "flops"


def tune(mod: Any, target: Any, job: TuneJob, initializer: Any, log: Any = print) -> dict[str, Any]:
    """Tune every task of `mod` into the JSON database in job.db_dir. Returns a summary (also written
    beside the database: the tasks with their trials and best latency, and the tuning curve)."""
    db_dir, budget, min_per_task, per_iter, strategy = Path(job.db_dir), job.trials, job.min_per_task, job.per_iter, job.search
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.relax_integration import extract_tasks, extracted_tasks_to_tune_contexts

    tasks = extract_tasks(mod, target)
    scores, unknown_flops = task_scores([int(t.weight) for t in tasks], [_task_flops(t) for t in tasks])
    measured: dict[str, float] = {}
    if job.weighting == "profile":
        measured = measured_task_us(mod, target, db_dir, _zeros_for(job))
        scores = [measured.get(t.task_name, 0.0) for t in tasks]
        total, in_tasks = sum(measured.values()), sum(measured.get(n, 0.0) for n in {t.task_name for t in tasks})
        log(f"weighting by measured time: {total / 1e3:.1f} ms a forward pass over {len(measured)} kernels, "
            f"{in_tasks / max(total, 1e-9):.0%} of it in the {len(tasks)} tasks")
    alloc = allocate_trials(scores, budget, min_per_task)
    database = ms.database.JSONDatabase(work_dir=str(db_dir))
    builder = _make_persistent_builder()(max_workers=job.threads, timeout_sec=job.builder_timeout_s, initializer=initializer)
    runner = ms.runner.LocalRunner()
    log(f"tuning {len(tasks)} tasks with {sum(alloc)} trials (asked {budget}; at least {min_per_task} each)"
        + (f"; {unknown_flops} task(s) without a FLOP estimate weighted at the median" if unknown_flops else ""))
    t0 = time.perf_counter()
    curve, rows, spent = [], [], 0
    prior = _read(db_dir / CURVE, [])
    try:
        for i, (task, n) in enumerate(zip(tasks, alloc)):
            contexts, weights = extracted_tasks_to_tune_contexts([task], work_dir=str(db_dir), strategy=strategy, seed=0)
            ms.tune.tune_tasks(tasks=contexts, task_weights=weights, work_dir=str(db_dir), max_trials_global=n,
                               max_trials_per_task=n, num_trials_per_iter=min(per_iter, n), builder=builder,
                               runner=runner, database=database, task_scheduler="round-robin")
            spent += n
            best = _best_seconds(database, task)
            rows.append({"task": task.task_name, "weight": int(task.weight), "score": scores[i], "measured_us": measured.get(task.task_name),
                         "trials": n, "best_us": None if best is None else best * 1e6})
            curve.append({"trials": spent, "elapsed_s": round(time.perf_counter() - t0, 1),
                          "estimated_ms": _estimate_ms(database, tasks), "tuned_ms": _estimate_ms(database, tasks, partial=True),
                          "tuned_tasks": i + 1})
            log(f"[{i + 1}/{len(tasks)}] {task.task_name}: {n} trials, best "
                + ("none (every trial failed)" if best is None else f"{best * 1e6:.1f} us")
                + f"; {spent}/{sum(alloc)} trials, {time.perf_counter() - t0:.0f} s, builder pool starts {builder.pool_starts}")
    finally:
        builder.shutdown()
    summary = {"tasks": rows, "total_tasks": len(tasks), "weighting": job.weighting, "tasks_without_flops": unknown_flops, "tuned_tasks": sum(1 for r in rows if r["best_us"] is not None),
               "trials": spent, "tuning_s": time.perf_counter() - t0, "builder_pool_starts": builder.pool_starts,
               "trials_per_minute": spent / max((time.perf_counter() - t0) / 60, 1e-9)}
    offset = prior[-1]["trials"] if prior else 0
    (db_dir / CURVE).write_text(json.dumps(prior + [{**c, "trials": c["trials"] + offset} for c in curve]))
    (db_dir / TASKS).write_text(json.dumps(summary))
    return summary


def _zeros_for(job: TuneJob) -> list[Any]:
    """An input of zeros per graph input of the job's model, at the job's shapes (initializers excluded)."""
    import numpy as np
    import onnx
    from onnx.helper import tensor_dtype_to_np_dtype

    graph = onnx.load(job.onnx_path, load_external_data=False).graph
    weights = {i.name for i in graph.initializer}
    return [np.zeros(job.shapes[i.name], dtype=tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type))
            for i in graph.input if i.name not in weights]


def measured_task_us(mod: Any, target: Any, db_dir: Path, inputs: list[Any], passes: int = 2) -> dict[str, float]:
    """Microseconds per forward pass spent in each PrimFunc of `mod` as it runs now: built with the
    schedules the database holds (none: untuned), run on `inputs` under the Relax VM's instrument hook
    (bench.profiling's way of timing TVM), summed over each function's call sites."""
    import numpy as np
    import tvm
    from tvm import relax
    from tvm.relax import transform

    from bench.profiling import vm_call_times

    if (db_dir / "database_tuning_record.json").is_file():
        with tvm.target.Target(target), tvm.transform.PassContext(opt_level=3):
            mod = transform.MetaScheduleApplyDatabase(str(db_dir))(mod)
    vm = relax.VirtualMachine(tvm.compile(mod, target=target), tvm.cpu())
    args = [tvm.runtime.tensor(np.ascontiguousarray(a)) for a in inputs]
    vm["main"](*args)
    calls = vm_call_times(vm)
    for _ in range(passes):
        vm["main"](*args)
    spent: dict[str, float] = {}
    for name, ns in calls:
        if not name.startswith("vm."):
            spent[name] = spent.get(name, 0.0) + ns / 1e3 / passes
    return spent


def _estimate_ms(database: Any, tasks: Sequence[Any], partial: bool = False) -> float | None:
    """The tuner's estimate of the whole model: sum over tasks of weight x best latency, where
    every task has a measured best; None while some task has none. With `partial`, the sum over
    the tasks that have one (what the tuning curve plots while tasks are tuned in turn)."""
    total = 0.0
    for t in tasks:
        best = _best_seconds(database, t)
        if best is None:
            if partial:
                continue
            return None
        total += t.weight * best
    return total * 1e3


def coverage(db_dir: Path, mod: Any, target: Any) -> dict[str, Any]:
    """How many of `mod`'s tasks the database holds a working schedule for."""
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.relax_integration import extract_tasks

    tasks = extract_tasks(mod, target)
    database = ms.database.JSONDatabase(work_dir=str(db_dir))
    tuned = sum(1 for t in tasks if _best_seconds(database, t) is not None)
    return {"tuned_tasks": tuned, "total_tasks": len(tasks), "estimated_ms": _estimate_ms(database, tasks)}


def _read(path: Path, default: Any) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return default
