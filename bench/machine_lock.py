"""The machine-wide timing lock: two timed loops on the same cores corrupt both figures, so a cell
times only while it holds this lock. Compiling, tuning and validating do not take it and overlap
freely. The lock is an flock on a file in the system temp directory (`BENCH_LOCK_DIR` overrides);
the holder writes who it is beside it, so a waiter can say which run it waits for.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

POLL_S = 0.1


def lock_dir() -> Path:
    return Path(os.environ.get("BENCH_LOCK_DIR") or tempfile.gettempdir())


def _paths() -> tuple[Path, Path]:
    d = lock_dir()
    return d / "bench-timing.lock", d / "bench-timing.holder"


def _open() -> int:
    path, _ = _paths()
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o666)
    with contextlib.suppress(OSError):
        os.fchmod(fd, 0o666)  # other users' runs on this machine take the same lock
    return fd


def holder() -> str | None:
    """Who is timing now ('run R, cell C, pid P'), or None when nobody is."""
    fd = _open()
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                return _paths()[1].read_text().strip() or "another bench process"
            except OSError:
                return "another bench process"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


@contextlib.contextmanager
def timing(label: str, on_wait: Callable[[str], None] = lambda who: None) -> Iterator[float]:
    """Hold the machine's timing lock for the block; yields the seconds spent waiting for it."""
    fd = _open()
    t0 = time.monotonic()
    told = None
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                try:
                    who = _paths()[1].read_text().strip() or "another bench process"
                except OSError:
                    who = "another bench process"
                if who != told:
                    on_wait(who)
                    told = who
                time.sleep(POLL_S)
        _paths()[1].write_text(f"{label}, pid {os.getpid()}")
        yield time.monotonic() - t0
    finally:
        os.close(fd)  # closing releases the flock (and a killed holder's is released by the kernel)
