"""Every use of multiprocessing's private names, in one place, checked.

bench starts workers from a fork server that preloads the engines (bench.worker). Three things it
needs have no public API in multiprocessing (3.10 to 3.13):
- a fork-server launch that does not re-import the parent's __main__ in the child
  (`popen_forkserver.Popen._launch` around `spawn.get_preparation_data`);
- the fork server's and the resource tracker's pids, to tell helpers from workers
  (`forkserver._forkserver._forkserver_pid`, `resource_tracker._resource_tracker._pid`);
- a Dask worker (a daemonic process) allowed to have a child (`current_process()._config`);
- a forked worker closing its copy of the server's liveness pipe, so that the server (and the worker)
  die when bench does (`forkserver._forkserver._forkserver_alive_fd`, `_forkserver_address`).
`check()` verifies each name where it is used, and `KNOWN` lists the Python versions these were read
on: tests/test_structure.py fails on any other version, so an upgrade is a loud failure in the
suite, not a silent change in every worker.
"""

from __future__ import annotations

import sys
from multiprocessing import current_process, forkserver, popen_forkserver, resource_tracker, spawn
from multiprocessing.context import ForkServerProcess
from typing import Any, Callable

KNOWN = {(3, 10), (3, 11), (3, 12), (3, 13)}


def check() -> list[str]:
    """The private names bench uses that this Python lacks (empty when all are there)."""
    wanted = [(popen_forkserver.Popen, "_launch"), (spawn, "get_preparation_data"), (forkserver, "_forkserver"),
              (forkserver._forkserver, "_forkserver_pid"), (resource_tracker, "_resource_tracker"),
              (resource_tracker._resource_tracker, "_pid"), (current_process(), "_config"), (ForkServerProcess, "_Popen"),
              (forkserver._forkserver, "_forkserver_alive_fd"), (forkserver._forkserver, "_forkserver_address")]
    return [f"{getattr(owner, '__name__', type(owner).__name__)}.{name}" for owner, name in wanted if not hasattr(owner, name)]


class NoMainPopen(popen_forkserver.Popen):
    """multiprocessing's fork-server launch, except that the child does not re-import the parent's
    __main__ (a CLI, a test runner, a user's script): a worker needs nothing from it, and importing
    it costs time or, for a script without a main guard, runs it."""

    def _launch(self, process_obj: Any) -> None:
        real = spawn.get_preparation_data

        def without_main(name: str) -> dict[str, Any]:
            data = real(name)
            data.pop("init_main_from_path", None)
            data.pop("init_main_from_name", None)
            return data

        spawn.get_preparation_data = without_main
        try:
            super()._launch(process_obj)
        finally:
            spawn.get_preparation_data = real


_before_start: list[Callable[[], None]] = []


class ServerProcess(ForkServerProcess):
    """A ForkServerProcess launched by NoMainPopen, after the hook `on_server_start` set (which
    starts the server with its preloads when needed). A module-level class: the process object is
    pickled to the server."""

    @staticmethod
    def _Popen(process_obj: Any) -> Any:
        for hook in _before_start:
            hook()
        return NoMainPopen(process_obj)


def on_server_start(hook: Callable[[], None]) -> None:
    if hook not in _before_start:
        _before_start.append(hook)


def forkserver_pid() -> int | None:
    return getattr(forkserver._forkserver, "_forkserver_pid", None)


def resource_tracker_pid() -> int | None:
    return getattr(resource_tracker._resource_tracker, "_pid", None)


def allow_children() -> None:
    """Let this (daemonic) process start children: Dask runs tasks in daemonic processes."""
    current_process()._config["daemon"] = False  # type: ignore[attr-defined]


def drop_server_alive_fd() -> None:
    """In a child forked from the server: close the inherited write end of the pipe by which the
    server learns that bench has gone (EOF once every holder closes it)."""
    import contextlib
    import os

    alive = getattr(forkserver._forkserver, "_forkserver_alive_fd", None)
    if alive is not None:
        with contextlib.suppress(OSError):
            os.close(alive)
        forkserver._forkserver._forkserver_alive_fd = None
        forkserver._forkserver._forkserver_address = None


def version_known() -> bool:
    return sys.version_info[:2] in KNOWN
