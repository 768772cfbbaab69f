"""The protocol every backend implements, and nothing else.

A backend says whether it is usable here (and why not), compiles one variant of a model for one
precision and batch size, and hands back a `Compiled` object that runs it. The runner drives every
backend through this protocol alone; it never asks which backend it holds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, runtime_checkable

import numpy as np

from bench.models.prepare import PreparedModel

Feeds = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class Availability:
    usable: bool
    reason: str = ""  # why not, when not usable
    versions: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CompileRequest:
    model: PreparedModel
    precision: str
    batch_size: int
    shapes: Mapping[str, tuple[int, ...]]
    threads: int
    work_dir: Path  # scratch space for artifacts of this cell


class Unsupported(Exception):
    """This backend cannot build the requested variant (a precision it lacks, say): the cell is skipped."""


@runtime_checkable
class Compiled(Protocol):
    # What actually ran, recorded in the row: variant (e.g. untuned), provider, target, threads.
    facts: Mapping[str, Any]
    # The clock the harness times `prepare`'s callable with: nanoseconds, monotonic. A GPU backend
    # would return one that synchronises its device.
    clock: Callable[[], int]

    def run(self, feeds: Feeds) -> dict[str, np.ndarray]:
        """Outputs by name, as numpy arrays, for validation."""

    def prepare(self, feeds: Feeds) -> Callable[[], object]:
        """A zero-argument forward call with its inputs already converted and placed."""

    def release(self) -> None: ...


@runtime_checkable
class Backend(Protocol):
    name: str
    variant: str  # the kind of variant compile builds, e.g. "untuned"; also reported by Compiled.facts
    precisions: tuple[str, ...]  # precisions this backend can build

    def availability(self) -> Availability: ...

    def compile(self, request: CompileRequest) -> Compiled: ...


HOST_CLOCK: Callable[[], int] = time.perf_counter_ns
