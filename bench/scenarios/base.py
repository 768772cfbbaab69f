"""The protocol every scenario implements: what it prepares before the machine's timing lock, what
it runs inside it, and how its processes combine into a row."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, runtime_checkable

from bench.backends.base import Backend, Compiled, CompileRequest, Feeds
from bench.config import Cell, Config


@dataclass
class TimedCell:
    """What a scenario gets of a compiled, validated cell."""

    cell: Cell
    config: Config
    backend: Backend
    request: CompileRequest
    compiled: Compiled
    feeds: list[Feeds]  # the seeded validation inputs, placed by the scenario before timing
    on_phase: Callable[[str], None]
    out_dir: Path  # where the scenario may write logs (LoadGen's), per process


@dataclass
class Prepared:
    """A scenario's timed run, ready: `run` is called inside the timing lock and returns (this
    process's figures, its samples in ns); `facts` go in the row now; `instances` are extra compiled
    instances the job releases."""

    run: Callable[[], tuple[dict[str, Any], list[int]]]
    facts: dict[str, Any] = field(default_factory=dict)
    instances: list[Compiled] = field(default_factory=list)
    # Whether the samples are per-call latencies of one caller, comparable with another tool timing
    # the same artifact (a backend's second_opinion: trtexec); not queueing latencies under load.
    comparable_calls: bool = False


@runtime_checkable
class Scenario(Protocol):
    name: str

    def prepare(self, timed: TimedCell) -> Prepared:
        """Before the timing lock: place inputs, compile what else the scenario needs."""

    def summarize(self, row: Mapping[str, Any], parts: list[dict[str, Any]], per_process: list[list[int]],
                  config: Config, peak: Mapping[str, Any]) -> dict[str, Any]:
        """The row's figures from every process's figures (`parts`) and samples; `row` is the row so
        far (its model facts, threads), `peak` the host's fp32 peak (bench.environment)."""
