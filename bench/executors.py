"""Where a cell's worker runs: one small interface, two implementations.

- `LocalExecutor` (the default): a fresh worker process on this machine (bench.worker).
- `DaskExecutor`: each job is a task on a Dask cluster (`--executor dask --scheduler tcp://HOST:PORT`);
  the task runs the job in a fresh worker process of its own on that machine, exactly as locally,
  so a crash or a timeout costs that cell only. Every timed job asks for the worker's one
  `bench_slot` (a machine times one cell at a time; N machines time N cells at once) and for its
  target's resource (a machine class such as `h100` or `epyc-2c`, a grid axis); `bench tune` jobs
  ask for a `compile_slot` instead. Files cross over in the task: the model (when the worker lacks
  it), the reference outputs, and back the cell's outputs and LoadGen logs; compiled artifacts stay
  in the worker's cache, or in a shared cache directory when the driver's exists there.

The driver (the machine that ran `bench run`) owns the journal: rows come back to it, so resume,
signals and crash handling are unchanged. A Dask worker lost mid-cell makes the cell `crashed`
with the reason, marked for `--resume` to run again; timed jobs are never retried by bench, so no
cell is timed twice and published once (give the scheduler `allowed-failures: 0` so that it does
not retry them either; the driver warns when it would).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Protocol

from bench.errors import BenchError
from bench.worker import Outcome, run_isolated

LOCAL = "local"


class Executor(Protocol):
    parallelism: int  # cells the driver may have in flight at once

    def run(self, job: dict[str, Any], work_dir: Path, name: str, timeout_s: float, on_phase: Callable[[str], None],
            target: str, timed: bool) -> Outcome: ...

    def targets(self) -> set[str] | None:
        """The machine classes this executor can reach (None: it cannot tell)."""

    def slots(self, target: str) -> int:
        """Timed cells of that machine class it can run at once."""

    def close(self) -> None: ...


def _placed(outcome: Outcome, started: float, ended: float, host: str, worker: str) -> Outcome:
    return dataclasses.replace(outcome, placement={"host": host, "worker": worker, "started_at": started, "ended_at": ended})


class LocalExecutor:
    """Worker processes on this machine, one at a time."""

    parallelism = 1

    def run(self, job: dict[str, Any], work_dir: Path, name: str, timeout_s: float, on_phase: Callable[[str], None],
            target: str, timed: bool) -> Outcome:
        if target != LOCAL:
            raise BenchError(f"target {target!r} is a machine class of a fleet: run with --executor dask --scheduler ADDRESS")
        t0 = time.time()
        outcome = run_isolated(job, work_dir, name, timeout_s, on_phase)
        return _placed(outcome, t0, time.time(), socket.gethostname(), LOCAL)

    def targets(self) -> set[str] | None:
        return {LOCAL}

    def slots(self, target: str) -> int:
        return 1

    def close(self) -> None: ...


# --- Dask -----------------------------------------------------------------------------------------

# Job keys naming files on the driver: what the task sends (in) and brings back (out).
_IN_FILES = ("reference_path",)
_OUT_FILES = ("outputs_path", "out_path")
_OUT_DIRS = ("scenario_dir",)
STARTED_TOPIC = "bench-task-started"


def remote_job(job: dict[str, Any], name: str, timeout_s: float, files: dict[str, bytes]) -> dict[str, Any]:
    """Runs on a Dask worker: the job in a fresh worker process there, in a scratch directory of its
    own; returns the outcome, where it ran, and the files the job wrote for the driver."""
    from dask.distributed import get_worker

    from bench import mp_private

    # Dask starts its workers as daemonic processes, which multiprocessing forbids to have children;
    # this task's child is the cell's worker process (bench.worker), which must exist. It dies with
    # its parent all the same (a parent-death signal), so nothing outlives the Dask worker.
    mp_private.allow_children()
    worker = get_worker()
    worker.log_event(STARTED_TOPIC, {"key": str(worker.get_current_task())})  # the driver tells lost-while-queued from lost-mid-cell
    scratch = Path(tempfile.mkdtemp(prefix="bench-task-"))
    try:
        local = dict(job)
        local["work_dir"] = str(scratch / "work")
        model = dict(job["model"])
        if "model" in files:  # the worker lacks the driver's file: the copy sent with the task
            (scratch / "model.onnx").write_bytes(files["model"])
            model["path"] = str(scratch / "model.onnx")
        elif model.get("arch") and not Path(model["path"]).parent.is_dir():
            model["path"] = str(_worker_models() / Path(model["path"]).name)  # the zoo exports it here
        local["model"] = model
        for key in _IN_FILES:
            if job.get(key):
                (scratch / key).write_bytes(files[key])
                local[key] = str(scratch / key)
        for key in _OUT_FILES:
            if job.get(key):
                local[key] = str(scratch / "out" / key)
        for key in _OUT_DIRS:
            if job.get(key):
                local[key] = str(scratch / "out" / key)
        if not _writable(Path(job["cache_dir"])):  # not a cache shared with the driver: this machine's own
            from bench.cache import default_root

            local["cache_dir"] = str(default_root())
        started = time.time()
        outcome = run_isolated(local, scratch / "work", name, timeout_s)
        ended = time.time()
        back: dict[str, Any] = {}
        for key in _OUT_FILES:
            if job.get(key) and Path(local[key]).is_file():
                back[key] = Path(local[key]).read_bytes()
        for key in _OUT_DIRS:
            if job.get(key) and Path(local[key]).is_dir():
                root = Path(local[key])
                back[key] = {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}
        return {"outcome": dataclasses.asdict(outcome), "files": back, "host": socket.gethostname(),
                "worker": worker.address, "started_at": started, "ended_at": ended, "fingerprint": _fingerprint()}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


_FINGERPRINT: dict[str, Any] = {}


def _fingerprint() -> dict[str, Any]:
    """This worker machine's environment fingerprint (bench.environment), computed once per process."""
    if not _FINGERPRINT:
        from bench.environment import fingerprint

        _FINGERPRINT.update(fingerprint())
    return _FINGERPRINT


def _worker_models() -> Path:
    from bench.cache import default_root

    path = default_root() / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _writable(path: Path) -> bool:
    return path.is_dir() and os.access(path, os.W_OK | os.X_OK)


class DaskExecutor:
    """Jobs as tasks on a Dask cluster (see the module's docstring)."""

    def __init__(self, scheduler: str, timeout_s: float = 30.0):
        try:
            from dask.distributed import Client
        except ImportError as e:
            raise BenchError(f"--executor dask needs Dask's distributed scheduler ({e}); pip install 'bench[fleet]'") from None
        try:
            self.client = Client(scheduler, timeout=timeout_s, set_as_default=False)
        except OSError as e:
            raise BenchError(f"--scheduler {scheduler}: cannot reach a Dask scheduler there ({e})") from None
        self.scheduler = scheduler
        self._scattered: dict[str, Any] = {}
        self._lock = threading.Lock()
        info = self.client.scheduler_info()
        slots = [w.get("resources", {}).get("bench_slot", 0) for w in info.get("workers", {}).values()]
        self.parallelism = max(1, int(sum(slots)))
        self.warnings: list[str] = []
        try:
            retries = self.client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.allowed_failures)
        except Exception:
            retries = None
        if retries:
            self.warnings.append(f"the scheduler at {scheduler} re-runs a task whose worker died up to {retries} times "
                                 "(distributed.scheduler.allowed-failures): a cell could be timed twice; start it with "
                                 "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES=0")

    def targets(self) -> set[str] | None:
        found: set[str] = set()
        for w in self.client.scheduler_info().get("workers", {}).values():
            found |= {r for r in w.get("resources", {}) if r not in ("bench_slot", "compile_slot")}
        return found

    def slots(self, target: str) -> int:
        workers = self.client.scheduler_info().get("workers", {}).values()
        return max(1, int(sum(w.get("resources", {}).get("bench_slot", 0) for w in workers if target in w.get("resources", {}))))

    def _files(self, job: dict[str, Any]) -> dict[str, Any]:
        files: dict[str, Any] = {}
        for key in _IN_FILES:
            if job.get(key):
                files[key] = Path(job[key]).read_bytes()
        path = job["model"]["path"]
        if not job["model"].get("arch"):  # a user's ONNX file: sent once, kept by the cluster
            with self._lock:
                if path not in self._scattered:
                    self._scattered[path] = self.client.scatter(Path(path).read_bytes(), hash=False, broadcast=True)
                files["model"] = self._scattered[path]
        return files

    def run(self, job: dict[str, Any], work_dir: Path, name: str, timeout_s: float, on_phase: Callable[[str], None],
            target: str, timed: bool) -> Outcome:
        from distributed import KilledWorker

        from distributed.client import FutureCancelledError

        slot = "bench_slot" if timed else "compile_slot"
        on_phase(f"queued on the fleet for a {target} {slot}")
        for attempt in (1, 2, 3):
            files = self._files(job)
            rest = {k: v for k, v in files.items() if k != "model"}
            future = self.client.submit(_with_model, job, name, timeout_s, rest, files.get("model"), resources={slot: 1, target: 1},
                                        pure=False, retries=0, key=f"bench-{name}-{os.urandom(4).hex()}")
            try:
                got = future.result()
                break
            except KilledWorker as e:
                if not self._started(future.key) and attempt < 3:
                    self._forget_model(job)
                    continue  # lost while queued on that worker, before it started: nothing was timed, submit again
                return Outcome("crashed", error=f"the Dask worker running it was lost ({type(e).__name__}: {e}); "
                                                "bench run --resume runs it again", placement={"resumable": True})
            except FutureCancelledError as e:
                # the worker holding the model's copy died before this task started: nothing ran, so
                # sending the model again and resubmitting times nothing twice
                if "lost dependencies" not in str(e) or attempt == 3:
                    raise
                self._forget_model(job)
            except BaseException:
                future.cancel()
                raise
        for key in _OUT_FILES:
            if key in got["files"]:
                Path(job[key]).parent.mkdir(parents=True, exist_ok=True)
                Path(job[key]).write_bytes(got["files"][key])
        for key in _OUT_DIRS:
            for rel, data in got["files"].get(key, {}).items():
                dest = Path(job[key]) / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(data)
        outcome = _placed(Outcome(**got["outcome"]), got["started_at"], got["ended_at"], got["host"], got["worker"])
        outcome.placement["fingerprint"] = got["fingerprint"]
        return outcome

    def _forget_model(self, job: dict[str, Any]) -> None:
        with self._lock:
            self._scattered.pop(job["model"]["path"], None)

    def _started(self, key: str) -> bool:
        try:
            return any(msg.get("key") == str(key) for _, msg in self.client.get_events(STARTED_TOPIC))
        except Exception:  # cannot tell: count it as started, so it is never timed twice
            return True

    def close(self) -> None:
        self.client.close()


def _with_model(job: dict[str, Any], name: str, timeout_s: float, files: dict[str, bytes], model: bytes | None) -> dict[str, Any]:
    return remote_job(job, name, timeout_s, {**files, **({"model": model} if model is not None else {})})


def make_executor(kind: str, scheduler: str | None) -> Executor:
    if kind == LOCAL:
        return LocalExecutor()
    if kind == "dask":
        if not scheduler:
            raise BenchError("--executor dask needs --scheduler tcp://HOST:PORT (or $BENCH_SCHEDULER)")
        return DaskExecutor(scheduler)
    raise BenchError(f"--executor {kind}: unknown; valid: local, dask")
