"""The backend registry. Backends load lazily, so listing them imports no framework."""

from __future__ import annotations

import importlib
import os
from typing import Any, Callable

from bench.backends.base import Backend

# name -> "module:factory"; a factory takes no argument and returns a Backend.
BACKENDS: dict[str, str | Callable[[], Backend]] = {
    "onnxruntime": "bench.backends.ort:OnnxRuntimeBackend",
    "tvm": "bench.backends.tvm:TvmBackend",
    "tvm_tuned": "bench.backends.tvm:TvmTunedBackend",
    "tvm_cuda": "bench.backends.tvm_cuda:TvmCudaBackend",
    "tvm_cuda_tuned": "bench.backends.tvm_cuda:TvmCudaTunedBackend",
    "onnxruntime_cuda": "bench.backends.ort:OnnxRuntimeCudaBackend",
    "onnxruntime_trt": "bench.backends.ort:OnnxRuntimeTensorrtBackend",
    "tensorrt": "bench.backends.tensorrt:TensorrtBackend",
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


def options_model(name: str) -> Any:
    """The pydantic model of a backend's `backend_options` (its class attribute `Options`), or None
    for a backend that declares none (a plugin, say: its options are passed through unchecked)."""
    return getattr(type(get_backend(name)), "Options", None)


def describe(name: str) -> dict:
    """Availability of one backend as plain data (for doctor and meta.json); never raises."""
    try:
        backend = get_backend(name)
        a = backend.availability()
        return {"usable": a.usable, "reason": a.reason, "versions": dict(a.versions),
                "precisions": list(backend.precisions), "variant": backend.variant}
    except Exception as e:  # a backend module that fails to import is reported, not fatal
        return {"usable": False, "reason": f"failed to load: {type(e).__name__}: {e}", "versions": {},
                "precisions": [], "variant": None}


def _load_plugins() -> None:
    """BENCH_PLUGINS: comma-separated modules, each with register(backends) adding entries to BACKENDS.
    Read at import, so worker processes see the same backends as the process that started them."""
    for module in filter(None, (m.strip() for m in os.environ.get("BENCH_PLUGINS", "").split(","))):
        try:
            importlib.import_module(module).register(BACKENDS)
        except Exception as e:
            raise ImportError(f"BENCH_PLUGINS module {module!r} failed to register backends: {e}") from e


_load_plugins()
