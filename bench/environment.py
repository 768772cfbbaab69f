"""What machine and software a run used, recorded in meta.json so a number can be traced."""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from bench.models.flops import cpu_peak

LIBRARIES = ("numpy", "onnx", "onnxruntime", "onnxruntime-gpu", "apache-tvm", "apache-tvm-ffi",
             "polygraphy", "tensorrt", "torch", "pandas", "pydantic")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def library_versions() -> dict[str, str]:
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
        return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def environment(threads: int) -> dict[str, Any]:
    from bench import __version__

    return {
        "bench_version": __version__,
        "git_commit": git_commit(),
        "hostname": platform.node(),
        "machine": platform.machine(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "threads": threads,
        "os": platform.platform(),
        "python": platform.python_version(),
        "libraries": library_versions(),
        "cpu_peak": cpu_peak(),
    }


def fingerprint() -> dict[str, Any]:
    """What makes two machines' figures comparable: CPU, cores, OS, Python and library versions, and a
    short hash of them (`env_fingerprint` in a row run on a fleet)."""
    import hashlib
    import json

    facts = {"cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "os": platform.platform(), "python": platform.python_version(),
             "libraries": library_versions()}
    return {**facts, "hash": hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:12]}
