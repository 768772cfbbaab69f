"""What any process under a cell's worker may need of the worker's conventions, without importing
the worker machinery (bench.worker) itself: announcing a phase, dying with its parent."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from bench import atomic

PHASE_ENV = "BENCH_PHASE_FILE"  # the file a worker's current phase is written to (bench.worker reads it)
PR_SET_PDEATHSIG = 1


def announce_progress(line: str) -> None:
    """From any process under a worker: show `line` as the cell's current phase (and log it)."""
    print(line, flush=True)
    path = os.environ.get(PHASE_ENV)
    if path:
        atomic.write_text(Path(path), line)


def die_with_parent(parent: int) -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux prctl), and exit now if
    the parent is already gone. A worker's parent is the fork server, which exits when bench does;
    an exec'd worker's is bench itself. Elsewhere: nothing (workers then outlive a killed parent)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:
        os._exit(1)
