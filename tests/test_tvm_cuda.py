"""TVM for CUDA without a GPU (NVRTC, ahead-of-time cubins), and the bundle a machine without bench or
TVM's compiler runs: built for the CPU target here and run in a fresh virtual environment."""

from __future__ import annotations

import json
import os
import subprocess
import venv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.backends import describe
from bench.config import config_from_dict
from bench.runner import compile_all, execute, plan
from tests.conftest import FAST_TIMING

cuda = describe("tvm_cuda")
needs_nvrtc = pytest.mark.skipif(not cuda["usable"], reason=f"tvm_cuda unusable here: {cuda['reason']}")


def _cfg(arch: str, **kw):
    return config_from_dict({
        "name": "cuda", "models": [{"name": "cnn", "source": "zoo:resnet18-tiny"}], "backends": ["tvm_cuda"],
        "precisions": ["fp32"], "batch_sizes": [1], "timing": FAST_TIMING, "backend_options": {"tvm_cuda": {"arch": arch}}, **kw,
    })


@needs_nvrtc
def test_cuda_compiles_here_to_cubins_of_the_asked_architecture(models_dir, tmp_path):
    from bench.backends.tvm_cuda import cubin_arch, describe_library

    entries = {}
    for arch in ("sm_80", "sm_90"):
        (row,) = compile_all(plan(_cfg(arch), models_dir), tmp_path / arch, isolate=False)
        assert row["status"] == "ok", row.get("error")
        entry = Path(row["artifact_dir"])
        lib = describe_library(entry)
        assert lib["arch"] == arch and lib["cubins"] and set(lib["cubins"].values()) == {arch}
        assert row["provider"].startswith(f"cuda -arch={arch} (NVRTC 13.")
        entries[arch] = entry
    assert entries["sm_80"] != entries["sm_90"]  # the architecture is part of the cache key
    assert cubin_arch(b"\x7fELF" + bytes(60)) is None  # not a CUDA ELF


@needs_nvrtc
def test_a_cell_without_its_device_is_skipped_with_the_reason(models_dir, tmp_path):
    cells = pd.read_csv(execute(plan(_cfg("sm_90"), models_dir), tmp_path / "r", isolate=False) / "cells.csv")
    (row,) = cells.to_dict("records")
    assert row["status"] == "skipped" and row["arch"] == "sm_90"
    assert "compiled for sm_90 and cached; no CUDA device is visible here" in row["error"]
    assert row["compile_s"] > 0 and pd.isna(row["p50_ms"])


@needs_nvrtc
def test_cuda_tuning_without_the_device_is_skipped_with_its_coverage(models_dir, tmp_path):
    cfg = config_from_dict({
        "name": "cuda", "models": [{"name": "cnn", "source": "zoo:resnet18-tiny"}], "backends": ["tvm_cuda_tuned"],
        "precisions": ["fp32"], "batch_sizes": [1], "timing": FAST_TIMING,
        "backend_options": {"tvm_cuda_tuned": {"arch": "sm_90", "trials": 16, "min_trials_per_task": 1}}})
    (row,) = compile_all(plan(cfg, models_dir), tmp_path / "r", isolate=False)
    assert row["status"] == "skipped"
    # The same coverage rules as on the CPU: MetaSchedule's tasks for the CUDA target, none tuned yet.
    done, total = row["error"].split(" tasks tuned")[0].split()[-1].split("/")
    assert done == "0" and int(total) > 3, row["error"]
    assert "16 of 16 trials still to run" in row["error"] and "no CUDA device is visible here" in row["error"]


def test_without_an_arch_or_a_device_the_cell_says_what_to_set(models_dir, tmp_path):
    cfg = _cfg("sm_90", backend_options={})
    cells = pd.read_csv(execute(plan(cfg, models_dir), tmp_path / "r", isolate=False) / "cells.csv")
    assert cells.loc[0, "status"] == "skipped"
    if cuda["usable"]:
        assert "set backend_options.tvm_cuda.arch" in cells.loc[0, "error"], cells.loc[0, "error"]
    else:
        assert cells.loc[0, "error"] == f"tvm_cuda unavailable: {cuda['reason']}"


# --- the bundle, round trip on the CPU -----------------------------------------------------------------


@pytest.fixture(scope="module")
def numpy_only_venv(tmp_path_factory) -> Path:
    """A fresh virtual environment with numpy and nothing else (no bench, no TVM)."""
    d = tmp_path_factory.mktemp("venv") / "env"
    venv.EnvBuilder(with_pip=True, clear=True).create(d)
    py = d / "bin" / "python"
    res = subprocess.run([str(py), "-m", "pip", "install", "--quiet", f"numpy=={np.__version__}"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    return py


def test_bundle_runs_in_a_numpy_only_environment(models_dir, tmp_path, numpy_only_venv):
    from bench.bundle import build

    cfg = config_from_dict({
        "name": "bundle", "models": [{"name": "cnn", "source": "zoo:resnet18-tiny"}],
        "backends": ["tvm", "onnxruntime"], "precisions": ["fp32", "fp16"], "batch_sizes": [2], "timing": FAST_TIMING,
    })
    out = tmp_path / "bundle"
    manifest = build(plan(cfg, models_dir), out)
    assert [(c["backend"], c["precision"]) for c in manifest["cells"]] == [("tvm", "fp32"), ("tvm", "fp16")]
    assert {c["cell"] for c in manifest["not_bundled"]} == {"cnn onnxruntime fp32 b2", "cnn onnxruntime fp16 b2"}
    assert not (out / "runtime" / "tvm" / "lib" / "libtvm_compiler.so").exists()
    assert manifest["sizes_mb"]["runtime"] < 40
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), "TVM_NUM_THREADS": "1"}
    res = subprocess.run([str(numpy_only_venv), str(out / "run.py"), "--min-time-s", "0", "--min-iterations", "3", "--warmup", "1"],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]
    result = json.loads((out / "results.json").read_text())
    assert result["environment"]["runtime_only"] is True
    rows = result["rows"]
    assert [r["status"] for r in rows] == ["ok", "ok"] and all(r["accuracy_ok"] for r in rows), rows
    assert rows[0]["max_abs_err"] < 1e-4 and rows[1]["max_abs_err"] > 0  # fp16 really differs
    assert all(r["p50_ms"] > 0 for r in rows)
    # the runner judges: a corrupted reference is DRIFTED and the exit code says so
    ref = out / manifest["cells"][0]["reference"]
    with np.load(ref) as z:
        arrays = {k: z[k] for k in z.files}
    arrays = {k: (v + 1.0 if k != "__meta__" else v) for k, v in arrays.items()}
    np.savez_compressed(ref, **arrays)
    res = subprocess.run([str(numpy_only_venv), str(out / "run.py"), "--min-time-s", "0", "--min-iterations", "1", "--warmup", "0"],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert res.returncode == 1 and "DRIFTED" in res.stdout, res.stdout
