"""Running a job in a worker process of its own, so that whatever one cell does costs that cell only.

A worker reads a job (see bench.jobs), runs it and writes its result atomically. The parent
(`run_isolated`) starts it in a new session, waits up to the cell's time limit, kills the whole
process group on timeout, and turns a signal or a bad exit code into a `crashed` outcome carrying
the tail of the worker's stderr.

Workers are fresh processes, but not fresh interpreters: they are forked from a server
(multiprocessing's `forkserver`) that imported the heavy modules (ONNX Runtime, TVM, Polygraphy,
pandas) once, before any thread pool existed, so a worker is ready in a few milliseconds instead of
the seconds those imports take. The server holds no session, no compiled module and no thread pool:
ONNX Runtime's pools belong to the session a cell creates, TVM's runtime pool starts on first use
with the cell's TVM_NUM_THREADS, so each cell still sets its own threads. A worker takes the
parent's environment, working directory and sys.path as they are at its start (the server's are
from when it started). `BENCH_WORKER_START=exec` starts each worker as `python -m bench.worker`
instead (a fresh interpreter, seconds of imports).
"""

from __future__ import annotations

import faulthandler
import json
import os
import resource
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from multiprocessing import forkserver

from bench import atomic, mp_private
from bench.process import PHASE_ENV, die_with_parent

STDERR_TAIL = 16000
POLL_S = 0.2


@dataclass(frozen=True)
class Outcome:
    status: str  # done, crashed, timeout
    value: dict[str, Any] | None = None  # the job's result when done
    error: str | None = None  # the job's own error (done but failed), or why the worker died
    traceback: str | None = None
    peak_rss_mb: float | None = None
    ready_s: float | None = None  # from asking for the worker to its running the job (isolated runs)
    placement: dict[str, Any] | None = None  # where and when it ran (bench.executors): host, worker, started_at, ended_at


def _peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_job(job: dict[str, Any], on_phase: Callable[[str], None] = lambda phase: None) -> Outcome:
    """The job in this process: exceptions become data, nothing else is caught."""
    from bench.jobs import error_text, execute_job

    try:
        return Outcome("done", execute_job(job, on_phase), peak_rss_mb=_peak_rss_mb())
    except Exception as e:
        return Outcome("done", None, error_text(e), "".join(traceback.format_exception(e)), _peak_rss_mb())


def _tail(path: Path) -> str:
    try:
        data = path.read_bytes()[-STDERR_TAIL:].decode(errors="replace").strip()
    except OSError:
        return ""
    return data


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        try:  # not yet the leader of its own group (killed before its setsid): the process itself
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


# Imported once by the fork server; a module that is not installed is skipped (multiprocessing
# ignores ImportError in preloading). Each of these starts no thread on import, measured (the server
# must hold none: a fork copies only the forking thread, and a lock another thread held stays held).
# Not here: onnxruntime (its import starts a thread; 0.05 s in the worker once these are loaded),
# pandas and pyarrow (jemalloc's background thread; workers do not use them).
PRELOAD = ["numpy", "onnx", "bench.jobs", "polygraphy.backend.onnxrt"]
# What the backends of this process's sweeps need as well (each backend's `preload`, e.g. TVM's
# compiler for the tvm backends), added by `preload_for` before the server starts; bench._freeze last.
_EXTRA: list[str] = []


def preload_for(modules: list[str]) -> None:
    """Have the fork server also import `modules` (when it has not started yet; once started it
    keeps what it has, and a worker imports anything else itself)."""
    for m in modules:
        if m not in _EXTRA:
            _EXTRA.append(m)


def _server_modules() -> list[str]:
    return [*PRELOAD, *_EXTRA, "bench._freeze"]


# The server's environment while it starts: numpy's OpenBLAS would start a pool of threads on import.
SERVER_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
START_ENV = "BENCH_WORKER_START"
STARTED_ENV = "BENCH_WORKER_STARTED"
PARENT_ENV = "BENCH_WORKER_PARENT"  # time.monotonic() when the parent asked for the worker (system-wide clock)


def _server_ready() -> None:
    if not _SERVER_READY:
        _prepare_server()


mp_private.on_server_start(_server_ready)
_ServerProcess = mp_private.ServerProcess  # a process forked from the fork server


_SERVER_READY = False


def service_pids() -> set[int]:
    """The fork server and multiprocessing's resource tracker, when running: long-lived helpers of
    this process, not workers (every worker is the server's child, and dies with its cell)."""
    return {p for p in (mp_private.forkserver_pid(), mp_private.resource_tracker_pid()) if p}


def _prepare_server() -> None:
    """Start the fork server with PRELOAD imported and SERVER_ENV set (for the server only: each
    worker takes the parent's environment when it starts)."""
    global _SERVER_READY
    forkserver.set_forkserver_preload(_server_modules())
    saved = {k: os.environ.get(k) for k in SERVER_ENV}
    os.environ.update(SERVER_ENV)
    try:
        forkserver.ensure_running()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    _SERVER_READY = True


class _Worker:
    """A started worker: its pid (also its process group), a wait with timeout, its exit code
    (negative: killed by that signal)."""

    def __init__(self, job_path: Path, result_path: Path, err_path: Path):
        self.started = time.monotonic()
        if os.environ.get(START_ENV, "forkserver") == "exec":
            with open(err_path, "wb") as err:
                self._popen = subprocess.Popen(
                    [sys.executable, "-m", "bench.worker", str(job_path), str(result_path)],
                    stdin=subprocess.DEVNULL, stdout=err, stderr=err, start_new_session=True,
                    env={**os.environ, STARTED_ENV: repr(self.started), PARENT_ENV: str(os.getpid())})
            self._process = None
            self.pid = self._popen.pid
        else:
            self._popen = None
            _prepare_server()  # started once; restarted (with its preloads) if something killed it
            self._process = _ServerProcess(
                target=_forked_main, args=(str(job_path), str(result_path), str(err_path), dict(os.environ), os.getcwd(),
                                           list(sys.path), self.started, mp_private.forkserver_pid() or 0),
                daemon=False)
            self._process.start()
            self.pid = self._process.pid

    def wait(self, timeout: float) -> int:
        if self._popen is not None:
            return self._popen.wait(timeout=timeout)
        self._process.join(timeout)
        if self._process.exitcode is None:
            raise subprocess.TimeoutExpired("bench worker", timeout)
        return self._process.exitcode

    def reap(self) -> None:
        if self._popen is not None:
            self._popen.wait()
        else:
            self._process.join()
            self._process.close()


def alive_worker(pid_file: Path) -> str | None:
    """'pid N (cell)' when the worker a pid file names is still running (same pid and start time)."""
    try:
        pid, start, name = pid_file.read_text().split(maxsplit=2)
        return f"pid {pid} ({name})" if _start_time(int(pid)) == start else None
    except (OSError, ValueError):
        return None


def _start_time(pid: int) -> str | None:
    """The start time of a live process (None when gone or a zombie): with its pid, an identity."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return None if fields[0] in ("Z", "X") else fields[19]
    except (OSError, IndexError):
        return None


def _forked_main(job_path: str, result_path: str, err_path: str, env: dict[str, str], cwd: str, sys_path: list[str],
                 started: float, parent: int) -> None:
    """A worker forked from the server: die with the server, become a session of its own, send
    output to the cell's log, take the parent's environment, then run as `python -m bench.worker`
    would."""
    # multiprocessing hands each forked child the write end of the pipe by which the server learns
    # that bench has gone (EOF once every holder closes it). A worker holding it would keep the
    # server, and so itself, alive after bench is killed: close it.
    mp_private.drop_server_alive_fd()
    die_with_parent(parent)
    os.setsid()
    fd = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    sys.path[:] = sys_path
    from bench import registry

    registry._load_plugins()  # BENCH_PLUGINS as the parent has it now
    rc = main([job_path, result_path], started)
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(rc)


STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n))


class Interrupts:
    """Ctrl-C, SIGTERM (CI cancellation, `timeout`) and SIGHUP (a closed terminal), made
    deterministic. While installed, each of them only kills the running worker's process group and
    sets a flag; KeyboardInterrupt is then raised at known points (the worker wait loop, between
    cells) instead of wherever the main thread happened to be (inside subprocess.Popen, a
    progress-bar lock, a parquet write), which could leave the parent unable to finish or a worker
    orphaned. `signum` says which signal it was (the CLI exits 128 + signum)."""

    def __init__(self) -> None:
        self.requested = False
        self.signum = signal.SIGINT
        self.active: set[int] = set()
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        self.requested = True
        self.signum = signum
        for pid in list(self.active):
            _kill_group(pid)

    def install(self) -> "Interrupts":
        import threading

        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handler) for s in STOP_SIGNALS}
        return self

    def uninstall(self) -> None:
        for s, previous in self._previous.items():
            signal.signal(s, previous)
        self._previous = {}

    def check(self) -> None:
        if self.requested:
            raise KeyboardInterrupt


def raise_on_stop_signals() -> None:
    """Outside a sweep: SIGTERM and SIGHUP interrupt like Ctrl-C (KeyboardInterrupt where the main
    thread is), so the CLI finishes with a message and 128 + signum instead of dying silently."""
    def handler(signum: int, frame: Any) -> None:
        INTERRUPTS.signum = signum
        raise KeyboardInterrupt

    for s in STOP_SIGNALS:
        if s != signal.SIGINT:
            signal.signal(s, handler)


INTERRUPTS = Interrupts()


def run_isolated(job: dict[str, Any], work_dir: Path, name: str, timeout_s: float,
                 on_phase: Callable[[str], None] = lambda phase: None) -> Outcome:
    work_dir.mkdir(parents=True, exist_ok=True)
    job_path, result_path, err_path, phase_path = (
        work_dir / f"{name}.{ext}" for ext in ("job.json", "result.json", "stderr.txt", "phase"))
    atomic.write_text(job_path, json.dumps({**job, "phase_path": str(phase_path)}, default=str))
    result_path.unlink(missing_ok=True)
    phase_path.unlink(missing_ok=True)
    err_path.write_bytes(b"")
    INTERRUPTS.check()
    proc = _Worker(job_path, result_path, err_path)
    INTERRUPTS.active.add(proc.pid)
    pid_file = work_dir / f"{name}.pid"
    pid_file.write_text(f"{proc.pid} {_start_time(proc.pid)} {name}")
    try:
        if INTERRUPTS.requested:  # Ctrl-C while the worker was being started
            raise KeyboardInterrupt
        rc = _wait(proc, timeout_s, phase_path, on_phase)
        INTERRUPTS.check()
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid)
        proc.reap()
        return Outcome("timeout", error=f"no result after cell_timeout_s={timeout_s:g}s; worker process group killed",
                       traceback=_tail(err_path))
    except BaseException:  # Ctrl-C in the parent: the worker is in its own session and must go too
        _kill_group(proc.pid)
        proc.reap()
        raise
    finally:
        INTERRUPTS.active.discard(proc.pid)
        pid_file.unlink(missing_ok=True)  # the worker has exited or been killed
    _kill_group(proc.pid)  # anything the worker left running
    proc.reap()
    if rc == 0 and result_path.is_file():
        out = json.loads(result_path.read_text())
        return Outcome("done", out.get("value"), out.get("error"), out.get("traceback"), out.get("peak_rss_mb"),
                       out.get("ready_s"))
    tail = _tail(err_path)
    if rc < 0:
        sig = signal.Signals(-rc).name
        why = f"worker killed by signal {sig}" + (" (also what the out-of-memory killer sends)" if sig == "SIGKILL" else "")
    else:
        why = f"worker exited with code {rc} and no result"
    lines = tail.splitlines()
    # faulthandler's line says what killed it; native backtraces (TVM installs one) follow it
    fatal = [line for line in lines if line.startswith("Fatal Python error")]
    last = fatal[0] if fatal else (lines[-1] if lines else "")
    return Outcome("crashed", error=why + (f": {last}" if last else ""), traceback=tail)


REPEAT_PHASE_S = 30.0


def _wait(proc: _Worker, timeout_s: float, phase_path: Path, on_phase: Callable[[str], None]) -> int:
    """Wait for the worker, passing on each phase it announces (and the current one again every
    REPEAT_PHASE_S, so a log shows a long phase is alive); TimeoutExpired after timeout_s."""
    deadline, seen, told = time.monotonic() + timeout_s, "", 0.0
    while True:
        try:
            return proc.wait(timeout=min(POLL_S, max(0.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            INTERRUPTS.check()
            if time.monotonic() >= deadline:
                raise
        try:
            phase = phase_path.read_text()
        except OSError:
            continue
        if phase and (phase != seen or time.monotonic() - told >= REPEAT_PHASE_S):
            seen, told = phase, time.monotonic()
            on_phase(phase)


def _preload() -> None:
    import importlib

    for module in _server_modules():
        try:
            importlib.import_module(module)
        except ImportError:
            pass


def main(argv: list[str], started: float | None = None) -> int:
    """Run the job in argv[0], write its result to argv[1]. `started`: when the parent asked for this
    worker (time.monotonic, a system-wide clock); the result says how long until the worker was
    ready, its modules imported (in a forked worker they already are)."""
    _preload()
    ready_s = None if started is None else time.monotonic() - started
    faulthandler.enable()  # a segfault leaves the Python stack in stderr, hence in the cell's log
    job_path, result_path = Path(argv[0]), Path(argv[1])
    job = json.loads(job_path.read_text())
    phase_path = Path(job["phase_path"]) if job.get("phase_path") else None
    if phase_path is not None:
        # processes this job starts (a tuning run) report progress through the same file
        os.environ[PHASE_ENV] = str(phase_path)

    def announce(phase: str) -> None:
        if phase_path is not None:
            atomic.write_text(phase_path, phase)

    outcome = run_job(job, announce)
    atomic.write_text(result_path, json.dumps(
        {"value": outcome.value, "error": outcome.error, "traceback": outcome.traceback, "peak_rss_mb": outcome.peak_rss_mb,
         "ready_s": ready_s},
        default=str,
    ))
    return 0


if __name__ == "__main__":
    if os.environ.get(PARENT_ENV):
        die_with_parent(int(os.environ.pop(PARENT_ENV)))
    started = os.environ.pop(STARTED_ENV, None)
    sys.exit(main(sys.argv[1:], None if started is None else float(started)))
