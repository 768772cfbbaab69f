"""A plugin backend and a plugin scenario written exactly as the README shows them (the code block is
read from README.md), run through the CLI in worker processes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd

from tests.conftest import FAST_TIMING, write_yaml

ROOT = Path(__file__).resolve().parent.parent


def _readme_plugin() -> str:
    text = (ROOT / "README.md").read_text()
    m = re.search(r"<!-- plugin example: my_plugin.py -->\n```python\n(.*?)```", text, re.S)
    assert m, "README.md lost its plugin example"
    return m.group(1)


def _bench(*args, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env=env)


def test_the_readme_plugin_runs_through_the_cli(tmp_path, mlp_onnx):
    (tmp_path / "my_plugin.py").write_text(_readme_plugin())
    env = {**os.environ, "BENCH_PLUGINS": "my_plugin",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), str(ROOT), os.environ.get("PYTHONPATH")]))}
    config = write_yaml(tmp_path / "plugin.yaml", {
        "name": "plugin", "models": [{"name": "mlp", "source": str(mlp_onnx)}],
        "backends": ["plain_ort", "onnxruntime"], "batch_sizes": [2], "timing": FAST_TIMING, "repeats": 2,
        "scenarios": ["single_stream", "burst"], "backend_options": {"plain_ort": {"threads": 1}},
    })
    proc = _bench("run", config, "--no-report", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = (tmp_path / "results").iterdir()
    cells = pd.read_csv(run_dir / "cells.csv").set_index(["backend", "scenario"])
    assert len(cells) == 4 and set(cells["status"]) == {"ok"}, cells[["status", "error"]]
    assert cells["validated"].all() and cells["accuracy_ok"].all()
    assert (cells["p50_ms"] > 0).all() and (cells["repeats"] == 2).all()
    burst = cells.xs("burst", level="scenario")
    assert burst["timed_region"].str.startswith("4 back-to-back calls per sample").all()
    assert cells.loc[("plain_ort", "single_stream"), "timed_region"].startswith("session.run on host arrays")
    # The plugin's options are typed like a built-in's: a bad value is refused before anything runs.
    bad = write_yaml(tmp_path / "bad.yaml", {**_load(config), "backend_options": {"plain_ort": {"threads": 0}}})
    refused = _bench("run", bad, cwd=tmp_path, env=env)
    assert refused.returncode == 2 and "plain_ort" in refused.stderr and "threads" in refused.stderr, refused.stderr
    unknown = write_yaml(tmp_path / "unknown.yaml", {**_load(config), "scenarios": ["bursty"]})
    refused = _bench("run", unknown, cwd=tmp_path, env=env)
    assert refused.returncode == 2 and "unknown scenario 'bursty'" in refused.stderr and "burst" in refused.stderr


def _load(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())


def test_a_plugin_missing_protocol_members_is_told_which_and_how(monkeypatch):
    """Written to the old README (no base class): refused with the members it lacks, not an
    AttributeError deep in the harness."""
    import pytest

    from bench import registry
    from bench.backends import get_backend

    class OldStyle:
        name, variant, precisions = "old_style", "v", ("fp32",)

        def availability(self): ...

        def compile(self, request): ...

    monkeypatch.setitem(registry.BACKENDS, "old_style", OldStyle)
    with pytest.raises(TypeError, match=r"lacks keeps_dynamic_batch, Options, preload: subclass bench\.backends\.base\.BackendBase"):
        get_backend("old_style")
    with pytest.raises(ValueError, match="declares no `Options`"):
        registry.options_model("old_style")
