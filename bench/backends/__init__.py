"""The backend registry. Backends load lazily, so listing them imports no framework."""

from __future__ import annotations

import importlib
from typing import Callable

from bench.backends.base import Backend

# name -> "module:factory"; a factory takes no argument and returns a Backend.
BACKENDS: dict[str, str | Callable[[], Backend]] = {
    "onnxruntime": "bench.backends.ort:OnnxRuntimeBackend",
    "tvm": "bench.backends.tvm:TvmBackend",
}


def get_backend(name: str) -> Backend:
    try:
        target = BACKENDS[name]
    except KeyError:
        raise KeyError(f"unknown backend {name!r}; valid: {', '.join(BACKENDS)}") from None
    if isinstance(target, str):
        module, _, attr = target.partition(":")
        target = getattr(importlib.import_module(module), attr)
    return target()
