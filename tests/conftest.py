"""Shared fixtures: tiny real models (zoo exports and hand-built ONNX graphs), cached per session."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml


@pytest.fixture(scope="session", autouse=True)
def artifact_cache(tmp_path_factory) -> Path:
    """Compiled-artifact cache for the session (workers inherit it), never the user's own."""
    import os

    path = tmp_path_factory.mktemp("cache")
    os.environ["BENCH_CACHE_DIR"] = str(path)
    # The machine-wide timing lock of the session's own: the suite neither waits for a benchmark
    # running beside it nor makes one wait (tests of the lock use a directory of their own).
    os.environ["BENCH_LOCK_DIR"] = str(tmp_path_factory.mktemp("lock"))
    return path


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    """One zoo cache for the whole session, so each tiny model is exported once."""
    return tmp_path_factory.mktemp("models")


def make_mlp_onnx(path: Path, batch_dim="batch", features: int = 8, classes: int = 4, seed: int = 0,
                  extra_dynamic: bool = False) -> Path:
    """A tiny classifier (MatMul, Add, Relu, MatMul) built with onnx.helper: no torch needed."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w1 = numpy_helper.from_array(rng.standard_normal((features, 16)).astype(np.float32), "w1")
    b1 = numpy_helper.from_array(rng.standard_normal(16).astype(np.float32), "b1")
    w2 = numpy_helper.from_array(rng.standard_normal((16, classes)).astype(np.float32), "w2")
    feat = "features" if extra_dynamic else features
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch_dim, feat])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch_dim, classes])
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Add", ["h", "b1"], ["hb"]),
        helper.make_node("Relu", ["hb"], ["r"]),
        helper.make_node("MatMul", ["r", "w2"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "mlp", [x], [y], [w1, b1, w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def make_cnn_onnx(path: Path, channels: int = 4, classes: int = 3, seed: int = 0) -> Path:
    """A minimal CNN (Conv, Relu, GlobalAveragePool, Flatten, Gemm) on 1x8x8 inputs, with a dynamic
    batch axis: the smallest graph with several distinct tuning tasks, for MetaSchedule tests."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.standard_normal((channels, 1, 3, 3)).astype(np.float32), "w")
    fc = numpy_helper.from_array(rng.standard_normal((classes, channels)).astype(np.float32), "fc")
    fb = numpy_helper.from_array(rng.standard_normal(classes).astype(np.float32), "fb")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", classes])
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "fc", "fb"], ["y"], transB=1),
    ]
    model = helper.make_model(helper.make_graph(nodes, "cnn", [x], [y], [w, fc, fb]), opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="session")
def mlp_onnx(tmp_path_factory) -> Path:
    return make_mlp_onnx(tmp_path_factory.mktemp("onnx") / "mlp.onnx")


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


FAST_TIMING = {"warmup": 1, "min_iterations": 3, "min_time_s": 0.0}


def wait_gone(pids, timeout_s: float = 60.0) -> list[int]:
    """Poll until every process is gone (or a zombie awaiting its reaper); the pids still alive at
    the deadline. A bounded wait on the condition: a loaded machine tears processes down slowly,
    and the claim under test is that they die, not how fast."""
    import time

    import psutil

    def alive(pid: int) -> bool:
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:  # gone between any two calls: no pid_exists-then-Process race
            return False

    deadline = time.monotonic() + timeout_s
    left = [p for p in pids if alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.02)
        left = [p for p in left if alive(p)]
    return left
