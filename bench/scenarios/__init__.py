"""Scenarios by name: how a cell is driven in its timed region. bench.registry holds their specs
(what the config and the grid need); each module here holds one scenario's runtime, a
bench.scenarios.base.Scenario. Adding one is a module and a ScenarioSpec (or a plugin's
`register_scenarios`)."""

from __future__ import annotations

from bench.registry import load, scenario
from bench.scenarios.base import Prepared, Scenario, TimedCell

__all__ = ["get_scenario", "Prepared", "Scenario", "TimedCell"]


def get_scenario(name: str) -> Scenario:
    return load(scenario(name).impl)()
