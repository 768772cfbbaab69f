"""Seeded inputs: the same arrays for a model and batch size in every run, for every backend."""

from __future__ import annotations

import zlib

import numpy as np

from bench.models.prepare import ModelInfo


def seeded_feeds(info: ModelInfo, batch_size: int, seed: int, iterations: int) -> list[dict[str, np.ndarray]]:
    """`iterations` feed dicts, ordered as the model's inputs. Floats are N(0, 1), like normalized
    images; integers are small non-negative values; booleans are fair coin flips."""
    rng = np.random.default_rng([seed, batch_size, zlib.crc32(info.name.encode())])
    feeds = []
    for _ in range(iterations):
        feed = {}
        for inp in info.inputs:
            shape, dtype = inp.shape(batch_size), np.dtype(inp.dtype)
            if dtype.kind == "f":
                arr = rng.standard_normal(shape, dtype=np.float32).astype(dtype)
            elif dtype.kind == "b":
                arr = rng.random(shape) < 0.5
            elif dtype.kind in "iu":
                arr = rng.integers(0, 10, size=shape).astype(dtype)
            else:
                raise ValueError(f"input {inp.name!r}: cannot generate data of type {dtype}")
            feed[inp.name] = arr
        feeds.append(feed)
    return feeds


def calibration_feeds(info: ModelInfo, seed: int, samples: int) -> list[dict[str, np.ndarray]]:
    """Batch-1 inputs for int8 calibration, from a stream of their own: never the validation inputs."""
    return seeded_feeds(info, 1, seed + 1_000_003, samples)
