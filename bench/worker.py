"""Running a job in a worker process of its own, so that whatever one cell does costs that cell only.

`python -m bench.worker JOB RESULT` reads a job (see bench.jobs), runs it and writes its result
atomically. The parent (`run_isolated`) starts it in a new session, waits up to the cell's time
limit, kills the whole process group on timeout, and turns a signal or a bad exit code into a
`crashed` outcome carrying the tail of the worker's stderr.
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

from bench import atomic

STDERR_TAIL = 2000
POLL_S = 0.2


@dataclass(frozen=True)
class Outcome:
    status: str  # done, crashed, timeout
    value: dict[str, Any] | None = None  # the job's result when done
    error: str | None = None  # the job's own error (done but failed), or why the worker died
    traceback: str | None = None
    peak_rss_mb: float | None = None


def _peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


PHASE_ENV = "BENCH_PHASE_FILE"


def announce_progress(line: str) -> None:
    """From any process under a worker: show `line` as the cell's current phase (and log it)."""
    print(line, flush=True)
    path = os.environ.get(PHASE_ENV)
    if path:
        atomic.write_text(Path(path), line)


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
        pass


class Interrupts:
    """Ctrl-C, made deterministic. While installed, SIGINT only kills the running worker's process
    group and sets a flag; KeyboardInterrupt is then raised at known points (the worker wait loop,
    between cells) instead of wherever the main thread happened to be (inside subprocess.Popen, a
    progress-bar lock, a parquet write), which could leave the parent unable to finish or a worker
    orphaned."""

    def __init__(self) -> None:
        self.requested = False
        self.active: set[int] = set()
        self._previous: Any = None

    def _handler(self, signum: int, frame: Any) -> None:
        self.requested = True
        for pid in list(self.active):
            _kill_group(pid)

    def install(self) -> "Interrupts":
        import threading

        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def uninstall(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def check(self) -> None:
        if self.requested:
            raise KeyboardInterrupt


INTERRUPTS = Interrupts()


def run_isolated(job: dict[str, Any], work_dir: Path, name: str, timeout_s: float,
                 on_phase: Callable[[str], None] = lambda phase: None) -> Outcome:
    work_dir.mkdir(parents=True, exist_ok=True)
    job_path, result_path, err_path, phase_path = (
        work_dir / f"{name}.{ext}" for ext in ("job.json", "result.json", "stderr.txt", "phase"))
    atomic.write_text(job_path, json.dumps({**job, "phase_path": str(phase_path)}, default=str))
    result_path.unlink(missing_ok=True)
    phase_path.unlink(missing_ok=True)
    with open(err_path, "wb") as err:
        INTERRUPTS.check()
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.worker", str(job_path), str(result_path)],
            stdin=subprocess.DEVNULL, stdout=err, stderr=err, start_new_session=True,
        )
        INTERRUPTS.active.add(proc.pid)
        try:
            if INTERRUPTS.requested:  # Ctrl-C while the worker was being started
                raise KeyboardInterrupt
            rc = _wait(proc, timeout_s, phase_path, on_phase)
            INTERRUPTS.check()
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid)
            proc.wait()
            return Outcome("timeout", error=f"no result after cell_timeout_s={timeout_s:g}s; worker process group killed",
                           traceback=_tail(err_path))
        except BaseException:  # Ctrl-C in the parent: the worker is in its own session and must go too
            _kill_group(proc.pid)
            proc.wait()
            raise
        finally:
            INTERRUPTS.active.discard(proc.pid)
        _kill_group(proc.pid)  # anything the worker left running
    if rc == 0 and result_path.is_file():
        out = json.loads(result_path.read_text())
        return Outcome("done", out.get("value"), out.get("error"), out.get("traceback"), out.get("peak_rss_mb"))
    tail = _tail(err_path)
    if rc < 0:
        sig = signal.Signals(-rc).name
        why = f"worker killed by signal {sig}" + (" (also what the out-of-memory killer sends)" if sig == "SIGKILL" else "")
    else:
        why = f"worker exited with code {rc} and no result"
    last = tail.splitlines()[-1] if tail else ""
    return Outcome("crashed", error=why + (f": {last}" if last else ""), traceback=tail)


def _wait(proc: subprocess.Popen, timeout_s: float, phase_path: Path, on_phase: Callable[[str], None]) -> int:
    """Wait for the worker, passing on each phase it announces; TimeoutExpired after timeout_s."""
    deadline, seen = time.monotonic() + timeout_s, ""
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
        if phase and phase != seen:
            seen = phase
            on_phase(phase)


def main(argv: list[str]) -> int:
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
        {"value": outcome.value, "error": outcome.error, "traceback": outcome.traceback, "peak_rss_mb": outcome.peak_rss_mb},
        default=str,
    ))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
