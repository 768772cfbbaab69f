"""Backends by name (bench.registry holds the names): loaded lazily, so listing them imports no framework."""

from __future__ import annotations

from bench.backends.base import BACKEND_MEMBERS, Backend, lacking
from bench.registry import BACKENDS, load, options_model

__all__ = ["BACKENDS", "get_backend", "options_model", "describe"]


def get_backend(name: str) -> Backend:
    try:
        target = BACKENDS[name]
    except KeyError:
        raise KeyError(f"unknown backend {name!r}; valid: {', '.join(BACKENDS)}") from None
    backend = load(target)()
    why = lacking(backend, BACKEND_MEMBERS, f"backend {name!r}:", "BackendBase")
    if why:
        raise TypeError(why)
    return backend


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
