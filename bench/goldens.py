"""Stored output sets: the reference's outputs for a model's seeded inputs (goldens), and each cell's
own outputs, in one compact, versioned format.

A file is a compressed .npz holding one array per (iteration, output), named "<iteration>/<output>",
and a "__meta__" JSON record saying what produced it. A golden is only used for a comparison whose
model hash, seed, batch size, iteration count and input shapes it matches.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench import atomic

FORMAT_VERSION = 1
MATCH_KEYS = ("model_sha256", "seed", "batch_size", "iterations", "input_shapes", "input_source")


@dataclass(frozen=True)
class OutputSet:
    meta: dict[str, Any]
    iterations: list[dict[str, np.ndarray]]

    def run_results(self, runner_name: str) -> Any:
        """As Polygraphy RunResults, for its Comparator."""
        from polygraphy.comparator import IterationResult, RunResults

        return RunResults([(runner_name, [IterationResult(OrderedDict(it), runner_name=runner_name) for it in self.iterations])])

    def mismatch(self, expected: dict[str, Any]) -> str:
        """Why this set can't stand for `expected`'s inputs, or an empty string."""
        diffs = [f"{k}: stored {self.meta.get(k)!r}, needed {expected.get(k)!r}"
                 for k in MATCH_KEYS if k in expected and self.meta.get(k) != expected.get(k)]
        return "; ".join(diffs)


def from_run_results(results: Any) -> list[dict[str, np.ndarray]]:
    ((_, iters),) = results.items()
    return [{k: np.asarray(v) for k, v in it.items()} for it in iters]


def save(path: Path, iterations: list[dict[str, np.ndarray]], meta: dict[str, Any]) -> None:
    arrays = {f"{i}/{name}": arr for i, it in enumerate(iterations) for name, arr in it.items()}
    full = {"format_version": FORMAT_VERSION, "created_at": dt.datetime.now(dt.timezone.utc).isoformat(),
            "outputs": list(iterations[0]) if iterations else [], **meta}
    buf = io.BytesIO()
    np.savez_compressed(buf, __meta__=np.frombuffer(json.dumps(full).encode(), dtype=np.uint8), **arrays)
    atomic.write_bytes(path, buf.getvalue())


def load(path: Path) -> OutputSet:
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(bytes(z["__meta__"]).decode())
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path}: output format version {meta.get('format_version')}, this bench reads {FORMAT_VERSION}")
        iterations: list[dict[str, np.ndarray]] = [{} for _ in range(meta["iterations"])]
        for key in z.files:
            if key != "__meta__":
                i, name = key.split("/", 1)
                iterations[int(i)][name] = z[key]
    return OutputSet(meta, iterations)


def file_name(model: str, batch_size: int) -> str:
    return f"{model}-b{batch_size}.npz"
