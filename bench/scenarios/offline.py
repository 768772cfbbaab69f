"""offline: every sample is available at once; the figure is samples per second sustained."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from bench.config import Cell, LoadGenConfig
from bench.scenarios.loadgen_base import LATENCY_FIGURES, Calls, LoadGenScenario, offline_run


class Offline(LoadGenScenario):
    name = "offline"

    def run_load(self, cell: Cell, lgc: LoadGenConfig, calls: Calls, estimate: float, part: dict[str, Any], out_dir: Path,
                 on_phase: Callable[[str], None]) -> tuple[dict[str, Any], float | None]:
        return offline_run(calls, cell.batch_size, lgc, estimate, out_dir, on_phase), None

    def measure(self, cell: Cell, lgc: LoadGenConfig, calls: Calls, out_dir: Path,
                on_phase: Callable[[str], None]) -> tuple[dict[str, Any], list[int]]:
        part, samples = super().measure(cell, lgc, calls, out_dir, on_phase)
        part.update(dict.fromkeys(LATENCY_FIGURES))  # latency from the one query's issue: not a figure of the engine
        return part, samples
