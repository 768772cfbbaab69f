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


# `make check`, the fast tier for the edit-test loop (pytest -m "not slow"), leaves these out; `make
# test` and CI run everything. Slow: whole modules about tuning, LoadGen, the fleet, faults through the
# CLI and other exporters' models; tests built on the module-wide end-to-end runs; tests over 5 s.
SLOW_MODULES = {"test_gpu_contracts", "test_loadgen", "test_fleet", "test_tvm_cuda", "test_faults", "test_foreign"}
SLOW_FIXTURES = {"e2e", "precision_run", "tuned_run", "foreign_run", "arrivals_run"}
SLOW_TESTS = {
    "test_gate_rejudges_stored_outputs_under_other_tolerances", "test_gate_refuses_incomplete_runs_and_counts_lost_cells",
    "test_int8_libraries_are_keyed_by_their_calibration", "test_the_readme_plugin_runs_through_the_cli",
    "test_crashing_hanging_and_raising_cells_cost_only_themselves", "test_gate_verdicts_and_exit_codes",
    "test_the_ci_workflow_bench_steps_run", "test_an_inherited_tvm_num_threads_does_not_override_the_configs_threads",
    "test_interrupt_keeps_finished_cells_and_resume_matches_an_uninterrupted_run", "test_ctrl_c_keeps_finished_cells_and_says_how_to_resume",
    "test_tables_are_rebuilt_from_the_journal_and_a_corrupt_run_is_bad_input", "test_goldens_replace_the_reference_backend",
    "test_cross_run_intervals_include_the_drift_seen_between_repeated_runs",
    "test_a_vision_transformer_and_an_efficientnet_run_validated_on_both_cpu_backends",
    "test_ab_of_one_config_with_itself_on_onnxruntime_is_never_a_change",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        module = item.module.__name__.rpartition(".")[2] if item.module else ""
        name = getattr(item, "originalname", item.name)
        if (module in SLOW_MODULES or SLOW_FIXTURES & set(getattr(item, "fixturenames", ())) or name in SLOW_TESTS
                or "tvm_tuned" in item.name):
            item.add_marker(pytest.mark.slow)


def stderr_after(proc, sig, timeout_s: float = 60.0) -> str:
    """Send `sig` to a running `bench` CLI and return its stderr once it exits; if it does not within
    `timeout_s`, fail with its Python stacks (bench's CLI dumps them on SIGUSR1)."""
    import signal
    import subprocess

    proc.send_signal(sig)
    try:
        return proc.communicate(timeout=timeout_s)[1]
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGUSR1)
        try:
            stderr = proc.communicate(timeout=15)[1]
        except subprocess.TimeoutExpired:
            proc.kill()
            stderr = proc.communicate()[1]
        raise AssertionError(f"bench did not exit within {timeout_s:g} s of {signal.Signals(sig).name}; its stacks:\n"
                             f"{stderr[-6000:]}") from None
