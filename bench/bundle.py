"""`bench bundle CONFIG -o DIR`: what a machine that only runs models needs to measure a config's
compiled TVM cells: the compiled libraries (with ahead-of-time cubins for CUDA), the seeded inputs
and the reference outputs, a runtime-only TVM (no compiler library) and a runner that needs only
numpy (bench/bundle_runner.py, copied as run.py). Nothing of bench goes with it.

This is how a model compiled on a workstation is measured on the board or GPU host it will run on,
and how the GPU check runs on a CUDA machine that has no TVM installed.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from bench import goldens
from bench.errors import BenchError
from bench.inputs import validation_feeds
from bench.runner import Plan, Reporter, compile_all, save_goldens

# What a runtime-only TVM leaves out: the compiler library, the sources and headers beside it, and
# the compiler's Python packages, which `import tvm` does not load in runtime-only mode (checked by
# the bundle test, which runs the bundle in an environment holding only numpy).
RUNTIME_EXCLUDE = ("lib/libtvm_compiler.so", "3rdparty", "src", "include", "relax", "topi", "s_tir", "web", "contrib",
                   "testing", "cmake", "exec")
FFI_EXCLUDE = ("include", "3rdparty", "src", "cython")


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise BenchError(f"bundle: the {name} package is not installed here")
    return Path(list(spec.submodule_search_locations)[0])


def _copy_tree(src: Path, dst: Path, exclude: tuple[str, ...] = ()) -> None:
    def ignore(directory: str, names: list[str]) -> list[str]:
        rel = Path(directory).relative_to(src)
        return [n for n in names if n == "__pycache__" or str(rel / n) in exclude or (rel == Path(".") and n in exclude)]

    shutil.copytree(src, dst, ignore=ignore)


def _tvm_ffi_for(python: str, dst: Path) -> str:
    """tvm_ffi (a compiled extension) for another Python: the same version's wheel from the index."""
    import importlib.metadata as md

    version = md.version("apache-tvm-ffi")
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", "--python-version", python,
               "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64",
               "-d", tmp, f"apache-tvm-ffi=={version}"]
        res = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if res.returncode != 0 or not wheels:
            raise BenchError(f"bundle: no apache-tvm-ffi {version} wheel for Python {python}: {res.stderr.strip()[-300:]}")
        with zipfile.ZipFile(wheels[0]) as z:
            for member in z.namelist():
                parts = member.split("/")
                if parts[0] == "tvm_ffi" and not (len(parts) > 2 and parts[1] in FFI_EXCLUDE):
                    z.extract(member, dst)
        return wheels[0].name


def runtime_only_tvm(dst: Path, python: str | None = None) -> dict[str, Any]:
    """Copy the TVM runtime (no compiler) and tvm_ffi into dst; tvm_ffi for `python` (e.g. "3.12")
    when given, else this interpreter's."""
    dst.mkdir(parents=True)
    _copy_tree(_package_dir("tvm"), dst / "tvm", RUNTIME_EXCLUDE)
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    if python is None or python == here:
        _copy_tree(_package_dir("tvm_ffi"), dst / "tvm_ffi", FFI_EXCLUDE)
        source = f"installed (Python {here})"
    else:
        source = _tvm_ffi_for(python, dst)
    import typing_extensions

    shutil.copy(typing_extensions.__file__, dst / "typing_extensions.py")
    return {"tvm_ffi": source, "python": python or here}


def _size_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def build(p: Plan, out: Path, cache_dir: Path | None = None, python: str | None = None,
          reporter: Reporter | None = None) -> dict[str, Any]:
    """Write the bundle; returns the manifest with sizes. Cells whose backend leaves no TVM library
    (ONNX Runtime, TensorRT) are listed under `not_bundled`."""
    if out.exists() and any(out.iterdir()):
        raise BenchError(f"bundle: {out} exists and is not empty; choose a new directory")
    out.mkdir(parents=True, exist_ok=True)
    cfg = p.config
    rows = compile_all(p, out / ".work", reporter, cache_dir)
    cells, not_bundled = [], []
    needed: set[tuple[str, int]] = set()
    for row in rows:
        label = f"{row['model']} {row['backend']} {row['precision']} b{row['batch_size']}"
        entry = Path(row["artifact_dir"]) if row.get("artifact_dir") else None
        if row.get("status", "ok") != "ok" or entry is None or not (entry / "lib.so").is_file():
            not_bundled.append({"cell": label, "why": row.get("error") or f"{row['backend']} leaves no TVM library"})
            continue
        lib_dir = Path("libs") / f"{row['model']}-{row['backend']}-{row['precision']}-b{row['batch_size']}"
        (out / lib_dir).mkdir(parents=True)
        shutil.copy(entry / "lib.so", out / lib_dir / "lib.so")
        if (entry / "cubins").is_dir():
            shutil.copytree(entry / "cubins", out / lib_dir / "cubins")
        info = p.models[row["model"]]
        tol = cfg.tolerance(row["precision"], row["model"])
        cells.append({
            "model": row["model"], "backend": row["backend"], "precision": row["precision"], "batch_size": row["batch_size"],
            "device": row.get("device", "cpu"), "arch": row.get("arch"), "library": str(lib_dir),
            "inputs": f"data/inputs-{goldens.file_name(row['model'], row['batch_size'])}",
            "reference": f"data/reference-{goldens.file_name(row['model'], row['batch_size'])}",
            "input_names": [i.name for i in info.inputs], "output_names": json.loads((entry / "info.json").read_text())["outputs"],
            "tolerance": tol.model_dump(), "executes_as": row.get("executes_as"), "gflop": row.get("gflop"),
            "model_sha256": row.get("model_sha256"), "variant": row.get("variant"),
        })
        needed.add((row["model"], row["batch_size"]))
    (out / "data").mkdir()
    refs = Plan(cfg, p.models, [c for c in p.cells if (c.model, c.batch_size) in needed], p.config_path)
    for path in save_goldens(refs, out / "data", cache_dir=cache_dir):
        path.rename(path.with_name(f"reference-{path.name}"))
    for model, batch in sorted(needed):
        info = p.models[model]
        feeds = validation_feeds(info, cfg.model(model).data, batch, cfg.seed, cfg.validation.iterations)
        goldens.save(out / "data" / f"inputs-{goldens.file_name(model, batch)}", feeds,
                     {"model": model, "batch_size": batch, "seed": cfg.seed, "iterations": len(feeds), "kind": "inputs"})
    shutil.rmtree(out / ".work", ignore_errors=True)
    runtime = runtime_only_tvm(out / "runtime", python)
    shutil.copy(Path(__file__).with_name("bundle_runner.py"), out / "run.py")
    import datetime as dt

    manifest = {"created": {"at": dt.datetime.now(dt.timezone.utc).isoformat(), "config": cfg.name,
                            "config_hash": cfg.digest(), "runtime": runtime},
                "cells": cells, "not_bundled": not_bundled}
    (out / "bundle.json").write_text(json.dumps(manifest, indent=2))
    manifest["sizes_mb"] = {"runtime": round(_size_mb(out / "runtime"), 1), "libraries": round(_size_mb(out / "libs"), 1) if cells else 0.0,
                            "data": round(_size_mb(out / "data"), 1), "total": round(_size_mb(out), 1)}
    return manifest
