"""A tiny real model on ONNX Runtime, compiled through bench's own backend, for harness benchmarks."""

from __future__ import annotations

import tempfile
from pathlib import Path

from bench.backends import get_backend
from bench.backends.base import CompileRequest
from bench.config import ModelSpec
from bench.inputs import seeded_feeds
from bench.models.prepare import inspect_model, materialize

CALLS = 200  # forward calls per round


def tiny_ort(arch: str = "resnet18-tiny", batch: int = 1, threads: int = 2):
    models = Path(tempfile.gettempdir()) / "bench-benchmark-models"
    model = materialize(inspect_model(ModelSpec(name="m", source=f"zoo:{arch}"), 0, 0, [batch], models))
    compiled = get_backend("onnxruntime").compile(
        CompileRequest(model, "fp32", batch, model.info.shapes(batch), threads, models)
    )
    feeds = seeded_feeds(model.info, batch, 0, 1)[0]
    return compiled, feeds


def bare_loop(session, feeds, n: int = CALLS) -> None:
    """What onnxruntime_perf_test or a hand-written script would time: session.run in a loop."""
    run, names = session.run, [o.name for o in session.get_outputs()]
    for _ in range(n):
        run(names, feeds)
