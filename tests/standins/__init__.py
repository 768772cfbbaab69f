"""Contract stand-ins for GPU libraries this project's machines cannot install (TensorRT, ONNX
Runtime's GPU build, the CUDA runtime on a machine without a GPU), for tests only.

Each is written from the vendor's API reference (cited in its module): it offers the attributes
of one version and refuses what that version lacks, checks the arguments our code passes, and
records the calls (tests.standins.calls). The arithmetic is real: a stand-in engine computes its
outputs with ONNX Runtime's CPU provider from the graph it was built from, so validation against
the reference means something. They check our calls, never a GPU's speed: no latency measured
through them is a GPU figure.

They reach worker processes through BENCH_PLUGINS (`install_env`): a worker imports the stand-in
module, whose `register` puts it in place before any backend code runs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

LOG_ENV = "BENCH_STANDIN_LOG"
GPU_ENV = "BENCH_STANDIN_GPU"  # "name,sm_XY" of the simulated device
DEFAULT_GPU = "NVIDIA H200 (stand-in),sm_90"


def record(api: str, call: str, **args: Any) -> None:
    """Append one call to the log named by BENCH_STANDIN_LOG (JSON lines; every process appends)."""
    path = os.environ.get(LOG_ENV)
    if not path:
        return
    with open(path, "a") as f:
        f.write(json.dumps({"api": api, "call": call, "pid": os.getpid(), **args}, default=str) + "\n")


def calls(path: Path, api: str | None = None, call: str | None = None) -> list[dict[str, Any]]:
    if not Path(path).is_file():
        return []
    out = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return [c for c in out if (api is None or c["api"] == api) and (call is None or c["call"] == call)]


def simulated_gpu() -> tuple[str, int, int]:
    name, arch = os.environ.get(GPU_ENV, DEFAULT_GPU).rsplit(",", 1)
    number = int(arch.strip().removeprefix("sm_").rstrip("af"))
    return name.strip(), number // 10, number % 10


def install_env(monkeypatch, *plugins: str, log: Path | None = None) -> None:
    """Make this process and every worker it starts load the named stand-in plugins."""
    root = str(Path(__file__).resolve().parents[2])
    monkeypatch.setenv("BENCH_PLUGINS", ",".join(plugins))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    if log is not None:
        monkeypatch.setenv(LOG_ENV, str(log))
