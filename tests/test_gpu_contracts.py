"""The GPU half through contract stand-ins (tests/standins): TensorRT 10.x and 11.x through
Polygraphy, ONNX Runtime's CUDA and TensorRT providers, the CUDA runtime, trtexec. They check our
calls against each vendor's documented API and compute real outputs on the CPU; no figure from
them is a GPU's speed. The headline config (configs/tvm_vs_trt.yaml) runs through the real CLI
with its own backend options, on a tiny model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
import yaml

from bench.backends.tensorrt import (api_facts, engine_precision, trtexec_flags, trtexec_times, typing_mode)
from bench.backends.base import Unsupported
from bench.gpu import arch_runs_on, parse_arch
from tests.conftest import FAST_TIMING, make_cnn_onnx, write_yaml
from tests.standins import calls, install_env
from tests.standins.tensorrt_api import make_module

ROOT = Path(__file__).resolve().parent.parent
GPU_BACKENDS = ["tensorrt", "onnxruntime_cuda", "onnxruntime_trt"]


def _trtexec_on_path(monkeypatch, tmp: Path) -> None:
    """trtexec on the PATH: a wrapper running the stand-in with this interpreter."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir(exist_ok=True)
    exe = bin_dir / "trtexec"
    exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{ROOT / "tests" / "standins" / "trtexec.py"}" "$@"\n')
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def _headline_config(work: Path, backends: list[str], **over) -> Path:
    """configs/tvm_vs_trt.yaml as shipped (backend options, precisions, reference), on a tiny CNN."""
    cfg = yaml.safe_load((ROOT / "configs" / "tvm_vs_trt.yaml").read_text())
    model = make_cnn_onnx(work / "cnn.onnx")
    # per-layer profiles off: a worker more per cell, and tests below profile through the stand-in directly
    cfg.update({"models": [{"name": "cnn", "source": str(model)}], "backends": backends, "batch_sizes": [1, 2],
                "timing": FAST_TIMING, "repeats": 1, "cell_timeout_s": 600, "profile": False, **over})
    cfg["backend_options"] = {k: v for k, v in cfg["backend_options"].items() if k in backends}
    return write_yaml(work / "headline.yaml", cfg)


def _run(config: Path, cwd: Path) -> tuple[subprocess.CompletedProcess, pd.DataFrame, Path]:
    proc = subprocess.run([sys.executable, "-m", "bench", "run", str(config)], cwd=cwd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = sorted((cwd / "results").iterdir(), key=lambda p: p.stat().st_mtime)
    return proc, pd.read_csv(runs[-1] / "cells.csv"), runs[-1]


@pytest.fixture(scope="module")
def trt11_run(tmp_path_factory):
    """The headline grid with TensorRT 11.x and onnxruntime-gpu stand-ins; the GPU providers refuse GlobalAveragePool."""
    work = tmp_path_factory.mktemp("trt11")
    mp = pytest.MonkeyPatch()
    try:
        install_env(mp, "tests.standins.trt11", "tests.standins.ort_gpu", log=work / "calls.jsonl")
        mp.setenv("BENCH_STANDIN_REJECT_OPS", "GlobalAveragePool")
        _trtexec_on_path(mp, work)
        proc, cells, run_dir = _run(_headline_config(work, ["onnxruntime", *GPU_BACKENDS]), work)
    finally:
        mp.undo()
    return proc, cells.set_index(["backend", "precision", "batch_size"]), run_dir, work / "calls.jsonl"


def test_tensorrt_11_builds_every_precision_strongly_typed_and_validates(trt11_run):
    _, cells, _, log = trt11_run
    trt = cells.xs("tensorrt", level="backend")
    assert set(trt["status"]) == {"ok"}, trt[["status", "error"]]
    assert trt["validated"].all() and trt["accuracy_ok"].all()
    # What the engine runs, read from the inspector with an execution context (not "other" or N/A).
    assert list(trt.xs(1, level="batch_size")["executes_as"].sort_index()) == ["fp16", "fp32", "int8"]
    assert set(trt["trt_typing"]) == {"strong"} and set(trt["backend_version"]) == {"11.4.0"}
    builds = calls(log, "tensorrt", "build_serialized_network")
    assert builds and all(b["strongly_typed"] and not b["flags"] and not b["calibrator"] and not b["tf32"] for b in builds)
    inspected = calls(log, "tensorrt", "get_engine_information")
    assert inspected and all(c["with_context"] for c in inspected)
    # The shipped config's workspace_mb reaches TensorRT as MemoryPoolType.WORKSPACE, in bytes.
    pools = calls(log, "tensorrt", "set_memory_pool_limit")
    assert pools and {(c["pool"], c["size"]) for c in pools} == {("WORKSPACE", 4096 << 20)}
    shapes = calls(log, "tensorrt", "set_input_shape")
    assert shapes and all(c["ok"] for c in shapes)


def test_tensorrt_rows_carry_the_gpu_identity_and_trtexec_agreement(trt11_run):
    _, cells, _, _ = trt11_run
    trt = cells.xs("tensorrt", level="backend")
    assert set(trt["gpu"]) == {"NVIDIA H200 (stand-in)"} and set(trt["compute_capability"]) == {"sm_90"}
    assert set(trt["cuda_driver"].astype(str)) == {"13.0"} and set(trt["cuda_runtime"].astype(str)) == {"13.0"}
    # trtexec timed the same engine file; the row has its median and bench's over it.
    assert (trt["trtexec_p50_ms"] > 0).all() and (trt["trtexec_ratio"] > 0).all()
    assert trt["trtexec_note"].str.contains("--noCudaGraph").all()  # 11.x: CUDA graphs are on unless refused


def test_the_timing_cache_is_loaded_by_later_builds(trt11_run):
    _, _, _, log = trt11_run
    # What each build's config was given (not Polygraphy's own merge when it saves the cache).
    given = [c["entries"] for c in calls(log, "tensorrt", "set_timing_cache")]
    assert len(given) == len(calls(log, "tensorrt", "build_serialized_network")) >= 2
    assert given[0] == 0 and given[-1] > 0  # the first build starts empty; later builds load what earlier ones saved


def test_onnxruntime_gpu_sessions_are_asked_what_users_ask(trt11_run):
    _, cells, _, log = trt11_run
    gpu = cells[cells.index.get_level_values("backend").isin(["onnxruntime_cuda", "onnxruntime_trt"])]
    assert set(gpu["status"]) == {"ok"}, gpu[["status", "error"]]
    assert gpu["validated"].all() and gpu["accuracy_ok"].all()
    everything = calls(log, "onnxruntime", "InferenceSession")
    assert everything and not any(c["ep_error"] for c in everything)  # no option refused, no silent retry on the CPU
    sessions = [c for c in everything if c["providers"] != ["CPUExecutionProvider"]]
    for c in sessions:
        assert c["options"]["CUDAExecutionProvider"]["use_tf32"] == "0"  # fp32 rows are fp32 math
    trt = [c for c in sessions if c["providers"][0] == "TensorrtExecutionProvider"]
    assert trt and all(c["providers"] == ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
                       and not c["optimized_model_filepath"] for c in trt)
    assert set(cells.xs("onnxruntime_trt", level="backend")["provider"]) == {"TensorrtExecutionProvider"}
    assert cells.xs("onnxruntime_cuda", level="backend")["options"].str.contains("use_tf32=0").all()
    # Strongly typed in the provider too: no weak-typing flags, the Q/DQ graph carries int8.
    trt_int8 = cells.loc[("onnxruntime_trt", "int8", 1)]
    assert trt_int8["executes_as"].startswith("int8") and "trt_int8_enable=False;" in trt_int8["options"]
    assert "TF32 allowed" in cells.loc[("onnxruntime_trt", "fp32", 1)]["executes_as"]


def test_work_that_falls_back_to_the_cpu_is_counted_and_marked(trt11_run):
    _, cells, run_dir, _ = trt11_run
    float_rows = cells[cells.index.get_level_values("precision") != "int8"]  # int8 graphs fuse the pool into a QLinear op
    cuda = float_rows.xs("onnxruntime_cuda", level="backend")
    assert cuda["cpu_fallback"].str.startswith("1 of ").all() and cuda["cpu_fallback"].str.contains("GlobalAveragePool x1").all()
    assert cuda["placement"].str.contains("CPUExecutionProvider x1").all()
    # Behind TensorRT, the CUDA provider takes what TensorRT rejects: nothing runs on the CPU.
    assert cells.xs("onnxruntime_trt", level="backend")["cpu_fallback"].isna().all()
    trt = float_rows.xs("onnxruntime_trt", level="backend")
    assert trt["placement"].str.contains("TensorrtExecutionProvider x1").all()  # one fused subgraph
    assert trt["placement"].str.contains("CUDAExecutionProvider x1").all()
    cpu = cells.xs("onnxruntime", level="backend")
    assert cpu["cpu_fallback"].isna().all() and cpu["placement"].str.match(r"CPUExecutionProvider x\d+$").all()
    text = next((run_dir.parent.parent / "reports" / run_dir.name).glob("report.md")).read_text()
    assert "onnxruntime_cuda" in text and "**not all GPU work**" in text and "ok (CPU fallback)" in text


@pytest.fixture(scope="module")
def trt10_runs(tmp_path_factory):
    """TensorRT 10.x: the same strongly typed path; then the same cache seen from another GPU."""
    work = tmp_path_factory.mktemp("trt10")
    mp = pytest.MonkeyPatch()
    try:
        install_env(mp, "tests.standins.trt10", log=work / "calls.jsonl")
        mp.setenv("BENCH_CACHE_DIR", str(work / "shared-cache"))
        _trtexec_on_path(mp, work)
        config = _headline_config(work, ["tensorrt"])
        first = _run(config, work)[1]
        mp.setenv("BENCH_STANDIN_GPU", "NVIDIA A100-SXM4-80GB (stand-in),sm_80")
        second = _run(config, work)[1]
    finally:
        mp.undo()
    return first, second, work / "calls.jsonl"


def test_tensorrt_10_takes_the_same_strongly_typed_path(trt10_runs):
    first, _, log = trt10_runs
    assert set(first["status"]) == {"ok"} and first["accuracy_ok"].all(), first[["status", "error"]]
    assert set(first["backend_version"]) == {"10.13.3"} and set(first["trt_typing"]) == {"strong"}
    assert sorted(set(first["executes_as"])) == ["fp16", "fp32", "int8"]
    assert first["trtexec_note"].str.contains("--noDataTransfers --useSpinWait").all()
    builds = calls(log, "tensorrt", "build_serialized_network")
    assert builds and all(b["strongly_typed"] and not b["flags"] for b in builds)


def test_engines_are_cached_per_gpu(trt10_runs):
    first, second, _ = trt10_runs
    assert set(first["compute_capability"]) == {"sm_90"} and set(second["compute_capability"]) == {"sm_80"}
    # An engine built on an H200 does not deserialize on an A100: the second GPU builds its own.
    assert set(second["status"]) == {"ok"}, second[["status", "error"]]
    assert not second["cache_hit"].any()


def test_weak_typing_is_refused_where_tensorrt_removed_it():
    assert api_facts(make_module("11.4.0"))["weak_typing"] is False
    assert api_facts(make_module("10.13.3")) == {"version": "10.13.3", "major": 10, "weak_typing": True, "strongly_typed_flag": True}
    with pytest.raises(Unsupported, match="no weak typing"):
        typing_mode("weak", api_facts(make_module("11.4.0")))
    assert typing_mode("weak", api_facts(make_module("10.13.3"))) == "weak"


def test_weak_typing_on_tensorrt_10_sets_the_precision_flags(tmp_path, monkeypatch):
    install_env(monkeypatch, "tests.standins.trt10", log=tmp_path / "calls.jsonl")
    config = _headline_config(tmp_path, ["tensorrt"], precisions=["fp16"], batch_sizes=[1])
    data = yaml.safe_load(config.read_text())
    data["backend_options"]["tensorrt"]["typing"] = "weak"
    write_yaml(config, data)
    _, cells, _ = _run(config, tmp_path)
    assert set(cells["status"]) == {"ok"} and set(cells["trt_typing"]) == {"weak"}
    (build,) = calls(tmp_path / "calls.jsonl", "tensorrt", "build_serialized_network")
    assert build["flags"] == ["FP16"] and not build["strongly_typed"]


def test_inspector_formats_of_both_versions():
    def layer(fmt):
        return {"LayerType": "CaskConvolution", "Outputs": [fmt]}

    ten = {"Layers": [layer({"Format/Datatype": "Channel major FP16 format where channel % 8 == 0"})] * 2}
    eleven = {"Layers": [layer({"Format": "Row major linear", "Datatype": "Int8"})] * 3, "I/O Tensors": []}
    assert engine_precision(ten) == "fp16" and engine_precision(eleven) == "int8"
    # An int8 convolution read as int8 even where it writes float (nothing quantized after it).
    last = {"LayerType": "CaskConvolution", "Inputs": [{"Datatype": "Int8"}], "Outputs": [{"Datatype": "FP32"}]}
    assert engine_precision({"Layers": [last]}) == "int8"
    assert engine_precision({"Layers": [layer({"Format/Datatype": "Row major linear BFloat16 format"})]}) == "bf16"
    blind = {"Layers": [layer({"Format/Datatype": "N/A due to dynamic shapes"})]}
    assert engine_precision(blind).startswith("unknown (the inspector saw no input shapes")


def test_trtexec_export_format_and_flags():
    # sampleReporting.cpp's exportJSONTrace: one object per timed iteration.
    keys = ["startEnqMs", "endEnqMs", "startH2dMs", "endH2dMs", "startComputeMs", "endComputeMs", "startD2hMs", "endD2hMs",
            "h2dMs", "computeMs", "d2hMs", "latencyMs"]
    records = [dict.fromkeys(keys, 0.0) | {"computeMs": v} for v in (0.5, 0.25, 0.75)]
    assert trtexec_times(records) == [0.5, 0.25, 0.75]
    with pytest.raises(ValueError):
        trtexec_times([{"latencyMs": 1.0}])
    assert trtexec_flags(10) == ["--noDataTransfers", "--useSpinWait"] and trtexec_flags(11) == ["--noCudaGraph"]


_TRT114: list = []  # one stand-in module for these tests: Polygraphy keeps the `tensorrt` it imported first


def _standin_engine(tmp_path, monkeypatch):
    """The tiny CNN (unnamed nodes) built by the TensorRT 11.4 stand-in through Polygraphy, with a profile of batch 1-4."""
    from polygraphy.backend.trt import CreateConfig, EngineBytesFromNetwork, EngineFromBytes, NetworkFromOnnxPath, Profile
    from polygraphy.cuda import cuda

    from tests.standins import cudart

    _TRT114[:] = _TRT114 or [make_module("11.4.0")]
    monkeypatch.setitem(sys.modules, "tensorrt", _TRT114[0])
    monkeypatch.setattr(cuda, "G_CUDA", None)
    cudart.install()
    model = make_cnn_onnx(tmp_path / "cnn.onnx")
    profile = Profile().add("x", (1, 1, 8, 8), (2, 1, 8, 8), (4, 1, 8, 8))
    plan = EngineBytesFromNetwork(NetworkFromOnnxPath(str(model), strongly_typed=True), CreateConfig(profiles=[profile]))()
    return model, EngineFromBytes(bytes(plan))()


def test_set_input_shape_refusal_is_an_error(tmp_path, monkeypatch):
    from bench.backends.tensorrt import TrtCompiled

    _, engine = _standin_engine(tmp_path, monkeypatch)
    facts = {"backend_version": "11.4.0"}
    ok = TrtCompiled(engine, dict(facts), {"x": (2, 1, 8, 8)})
    x = np.random.default_rng(0).standard_normal((2, 1, 8, 8)).astype(np.float32)
    assert ok.run({"x": x})["y"].shape == (2, 3)
    ok.release()
    with pytest.raises(RuntimeError, match=r"refused input shape x=\[8, 1, 8, 8\]"):
        TrtCompiled(engine, dict(facts), {"x": (8, 1, 8, 8)})  # beyond the profile's max batch of 4


def test_tensorrt_profile_uses_an_iprofiler_and_the_inspector(tmp_path, monkeypatch):
    from bench.backends.tensorrt import TrtCompiled
    from bench.profiling import EXACT, Graph

    model, engine = _standin_engine(tmp_path, monkeypatch)
    compiled = TrtCompiled(engine, {"backend_version": "11.4.0"}, {"x": (2, 1, 8, 8)})
    compiled.graph_path = model
    try:
        got = compiled.profile({"x": np.zeros((2, 1, 8, 8), np.float32)})
    finally:
        compiled.release()
    nodes = set(Graph.of(onnx.load(str(model))).order)  # its nodes are unnamed: the layers are node_of_<output>
    assert got.passes >= 3 and got.layers and {layer.confidence for layer in got.layers} == {EXACT}
    assert {n for layer in got.layers for n in layer.nodes} <= nodes and got.layers[0].median_us == pytest.approx(10.0)


def test_tensorrt_int8_graph_is_symmetric_signed_and_validated_on_the_cpu(tmp_path):
    import onnx
    import onnxruntime as ort

    from bench.cache import ArtifactCache
    from bench.precision import int8_onnx, symmetric_int8_problems

    model = make_cnn_onnx(tmp_path / "cnn.onnx", channels=8)
    rng = np.random.default_rng(0)
    calib = [{"x": rng.standard_normal((2, 1, 8, 8)).astype(np.float32)} for _ in range(8)]
    cache = ArtifactCache(tmp_path / "c")
    trt_path, _ = int8_onnx(model, "m", calib, cache, flavor="tensorrt")
    cpu_path, _ = int8_onnx(model, "m", calib, cache, flavor="cpu")
    assert symmetric_int8_problems(onnx.load(str(trt_path))) == []
    assert symmetric_int8_problems(onnx.load(str(cpu_path)))  # unsigned activations with zero points: not for TensorRT
    from onnx import helper

    unsigned = helper.make_model(helper.make_graph([helper.make_node("QuantizeLinear", ["x", "s"], ["q"])], "g", [], []))
    assert symmetric_int8_problems(unsigned) == ["QuantizeLinear: no zero point, so it quantizes to UINT8"]
    ops = {n.op_type for n in onnx.load(str(trt_path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    # The graph TensorRT gets, run on ONNX Runtime's CPU provider against the fp32 model.
    x = rng.standard_normal((2, 1, 8, 8)).astype(np.float32)
    ref = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = ort.InferenceSession(str(trt_path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    cosine = float(ref.ravel() @ got.ravel() / (np.linalg.norm(ref) * np.linalg.norm(got)))
    assert cosine > 0.99 and not np.array_equal(ref, got)


def test_architecture_suffixes():
    assert str(parse_arch("sm_90a")) == "sm_90a" and parse_arch("sm_100f").number == 100
    assert arch_runs_on("sm_90a", "sm_90") and not arch_runs_on("sm_90a", "sm_100")
    assert arch_runs_on("sm_100f", "sm_103") and not arch_runs_on("sm_100f", "sm_120")
    assert arch_runs_on("sm_80", "sm_80") and not arch_runs_on("sm_80", "sm_86")
    with pytest.raises(ValueError, match="sm_XYa"):
        parse_arch("sm90")


def test_the_pip_cuda_13_runtime_is_found_where_polygraphy_finds_none():
    from bench.gpu import pip_cuda_lib_dirs

    if not any(d.parts[-2:] == ("cu13", "lib") for d in pip_cuda_lib_dirs()):
        pytest.skip("the CUDA 13 runtime wheel (bench[cuda-compile]) is not installed")
    # A fresh process on a host with no CUDA toolkit (Polygraphy's own search finds no libcudart):
    # the runtime comes from nvidia/cu13/lib, which Polygraphy does not search, so TensorRT's
    # availability names the device, not the library.
    code = ("from polygraphy.cuda import cuda\n"
            "def no_toolkit(self): raise OSError('libcudart.so: cannot open shared object file')\n"
            "cuda.Cuda.__init__ = no_toolkit\n"
            "from bench import gpu; print(gpu.runtime_handle()._name)\n"
            "from bench.backends.tensorrt import cuda_device; print(repr(cuda_device()[1]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    lib, why = out.stdout.strip().splitlines()[-2:]
    assert "nvidia/cu13/lib/libcudart.so" in lib, out.stderr
    assert why == "''" or why.startswith("'no CUDA device"), why  # '' where a GPU is present
