"""fp16 and int8 for real on ONNX Runtime and TVM with a tiny CNN; the artifact cache; TensorRT's
pure parts (its GPU paths are marked and skipped without a device)."""


import pandas as pd
import pytest

from bench.backends.tensorrt import TensorrtBackend, builder_flags, profile_shapes
from bench.cache import ArtifactCache
from bench.config import config_from_dict
from bench.runner import execute, plan
from tests.conftest import FAST_TIMING


def _cfg(**kw):
    return config_from_dict({
        "name": "p", "models": [{"name": "cnn", "source": "zoo:resnet18-tiny"}],
        "backends": ["onnxruntime", "tvm"], "precisions": ["fp32", "fp16", "int8"], "batch_sizes": [2],
        "timing": FAST_TIMING, "repeats": 1, **kw,
    })


@pytest.fixture(scope="module")
def precision_run(tmp_path_factory, models_dir):
    work = tmp_path_factory.mktemp("prec")
    cache = work / "cache"
    run_dir = execute(plan(_cfg(), models_dir), work / "results", run_id="cold", isolate=False, cache_dir=cache)
    return work, cache, pd.read_csv(run_dir / "cells.csv").set_index(["backend", "precision"])


def test_every_precision_runs_validated_within_default_tolerances(precision_run):
    _, _, cells = precision_run
    assert set(cells["status"]) == {"ok"}
    assert cells["validated"].all() and cells["accuracy_ok"].all(), cells[["max_abs_err", "cosine", "accuracy_note"]]
    assert (cells.loc[[("onnxruntime", "fp16"), ("tvm", "fp16")], "max_abs_err"] > 0).all()  # really converted
    assert (cells.xs("int8", level="precision")["cosine"] < 0.9999).all()


def test_rows_say_what_really_executed(precision_run):
    _, _, cells = precision_run
    assert cells.loc[("tvm", "fp16"), "executes_as"] == "fp16"
    assert cells.loc[("tvm", "int8"), "executes_as"] == "fp32 (int8 weights dequantized; float kernels)"
    assert "int8" in cells.loc[("onnxruntime", "int8"), "executes_as"]
    # ONNX Runtime's CPU provider casts most fp16 compute back to fp32; the row reports what ran.
    assert "fp32" in cells.loc[("onnxruntime", "fp16"), "executes_as"]  # "fp32", or "mixed: fp32 xN, fp16 xM"
    assert cells.loc[("onnxruntime", "fp32"), "executes_as"] == "fp32"


def test_a_deliberately_tight_tolerance_fails(models_dir, tmp_path):
    tight = {p: {"atol": 1e-7, "rtol": 1e-7} for p in ("fp16", "int8")}
    cfg = _cfg(precisions=["fp16", "int8"], backends=["onnxruntime"], tolerances=tight)
    cells = pd.read_csv(execute(plan(cfg, models_dir), tmp_path / "r", isolate=False, cache_dir=tmp_path / "c") / "cells.csv")
    assert set(cells["status"]) == {"ok"} and not cells["accuracy_ok"].any()
    assert cells["accuracy_note"].str.contains("beyond atol=1e-07").all()


def test_warm_cache_hits_and_gives_the_same_outputs(precision_run, models_dir):
    work, cache, cold = precision_run
    warm = pd.read_csv(execute(plan(_cfg(), models_dir), work / "results", run_id="warm", isolate=False,
                               cache_dir=cache) / "cells.csv").set_index(["backend", "precision"])
    assert not cold["cache_hit"].any()
    converted = [("onnxruntime", "fp16"), ("onnxruntime", "int8"), ("tvm", "fp32"), ("tvm", "fp16"), ("tvm", "int8")]
    assert warm.loc[converted, "cache_hit"].all()
    pd.testing.assert_series_equal(warm["max_abs_err"], cold["max_abs_err"])


def test_corrupt_cache_entries_are_rebuilt_never_used(tmp_path):
    cache = ArtifactCache(tmp_path)
    builds = []

    def build(d):
        builds.append(d)
        (d / "lib.so").write_bytes(b"compiled")

    key = {"model": "x", "precision": "fp32"}
    first, hit = cache.get_or_build("k", key, build)
    assert not hit and (first / "lib.so").read_bytes() == b"compiled"
    assert cache.get_or_build("k", key, build) == (first, True)
    (first / "lib.so").write_bytes(b"truncat")  # same size games don't fool the hash either
    again, hit = cache.get_or_build("k", key, build)
    assert not hit and (again / "lib.so").read_bytes() == b"compiled" and len(builds) == 2
    (again / "entry.json").write_text("{not json")
    assert cache.get_or_build("k", key, build)[1] is False and len(builds) == 3
    assert [e["kind"] for e in cache.entries()] == ["k"]
    assert cache.clear() == 1 and cache.entries() == []


def test_disabled_cache_builds_every_time_and_keeps_nothing(tmp_path):
    cache = ArtifactCache(tmp_path / "root", enabled=False, scratch=tmp_path / "scratch")
    n = []
    for _ in range(2):
        d, hit = cache.get_or_build("k", {"a": 1}, lambda d: n.append((d / "f").write_text("x")))
        assert not hit and d.is_relative_to(tmp_path / "scratch")
    assert len(n) == 2 and not (tmp_path / "root").exists()


def test_tensorrt_profile_spans_the_grid_batch_sizes():
    shapes = {"input": (4, 3, 224, 224), "scale": (3,)}
    prof = profile_shapes(shapes, batch_sizes=(1, 4, 32), batch=4)
    assert prof["input"] == ((1, 3, 224, 224), (4, 3, 224, 224), (32, 3, 224, 224))
    assert prof["scale"] == ((3,), (3,), (3,))
    assert profile_shapes({"x": (2, 8)}, batch_sizes=(), batch=2)["x"] == ((2, 8),) * 3


@pytest.mark.parametrize("version", ["10.13.3", "11.4.0"])
def test_tensorrt_builder_flags(version):
    from tests.standins.tensorrt_api import make_module

    trt = make_module(version)
    # Strong typing (both versions): no precision flag at all; the graph carries the types.
    assert builder_flags("fp32", {}, trt) == {"tf32": False}
    assert builder_flags("int8", {}, trt) == {"tf32": False}
    f = builder_flags("fp16", {"workspace_mb": 512, "builder_optimization_level": 5}, trt)
    # The pool is TensorRT's enum, as IBuilderConfig.set_memory_pool_limit takes it (a string key raised TypeError).
    assert f["memory_pool_limits"] == {trt.MemoryPoolType.WORKSPACE: 512 << 20} and f["builder_optimization_level"] == 5
    assert builder_flags("fp32", {"tf32": True}, trt)["tf32"] is True
    weak = builder_flags("int8", {}, trt, typing="weak")
    assert weak["int8"] and weak["fp16"]  # weak int8 engines fall back to fp16, not fp32, where int8 has no kernel
    # a model that arrives quantized: its own Q/DQ graph, strongly typed as it is; weak typing enables int8
    assert builder_flags("int8 (as given)", {}, trt) == {"tf32": False}
    assert builder_flags("int8 (as given)", {}, trt, typing="weak") == {"tf32": False, "fp16": True, "int8": True}
    with pytest.raises(ValueError):
        builder_flags("fp8", {}, trt)


class _FakeCudaRuntime:
    """The CUDA runtime calls CudaEventPair makes, on a simulated device timeline (ms per event)."""

    def __init__(self, times_ms, fail=None):
        import ctypes

        self.ctypes, self.times, self.fail, self.recorded = ctypes, list(times_ms), fail or {}, {}
        self.next_id = 1

    def _status(self, name):
        return self.fail.get(name, 0)

    def cudaEventCreate(self, ref):
        ref._obj.value = self.next_id
        self.next_id += 1
        return self._status("cudaEventCreate")

    def cudaEventRecord(self, ev, stream):
        self.recorded[ev.value] = self.times.pop(0)
        return self._status("cudaEventRecord")

    def cudaEventSynchronize(self, ev):
        return self._status("cudaEventSynchronize")

    def cudaEventElapsedTime(self, ref, a, b):
        ref._obj.value = self.ctypes.c_float(self.recorded[b.value] - self.recorded[a.value]).value
        return self._status("cudaEventElapsedTime")

    def cudaEventDestroy(self, ev):
        return 0

    def cudaGetErrorString(self, status):
        return b"an illegal memory access was encountered"


def test_tensorrt_event_pair_times_each_call_in_integer_nanoseconds():
    from bench.backends.tensorrt import CudaEventPair
    from bench.config import TimingConfig
    from bench.timing import measure

    # Start/end events of three calls, late in a long session: relative to one base event (the
    # old clock), float32 milliseconds at 7200 s have a 0.5 ms step; a pair per call keeps 1 us.
    t = 7_200_000.0
    rt = _FakeCudaRuntime([t, t + 0.25, t + 1.0, t + 1.251, t + 2.0, t + 2.3])
    pair = CudaEventPair(0, handle=rt)
    samples = measure(lambda: None, clock=None, timing=TimingConfig(warmup=0, min_iterations=3, min_time_s=0.0), interval=pair)
    assert all(isinstance(v, int) for v in samples)
    assert samples == pytest.approx([250_000, 251_000, 300_000], abs=1_000)


@pytest.mark.parametrize("call", ["cudaEventRecord", "cudaEventSynchronize", "cudaEventElapsedTime"])
def test_tensorrt_event_pair_checks_every_cuda_status(call):
    from bench.backends.tensorrt import CudaEventPair

    pair = CudaEventPair(0, handle=_FakeCudaRuntime([0.0, 1.0], fail={call: 700}))
    with pytest.raises(RuntimeError, match=f"{call}.* failed with CUDA error 700 \\(an illegal memory access"):
        pair(lambda: None)


def test_tensorrt_failed_enqueue_is_an_error_not_a_fast_sample():
    from bench.backends.tensorrt import enqueue_checked

    calls = []
    ok = enqueue_checked(lambda ptr: calls.append(ptr) or True, 7)
    ok()
    assert calls == [7]
    with pytest.raises(RuntimeError, match="execute_async_v3 returned False"):
        enqueue_checked(lambda ptr: False, 7)()


def test_tensorrt_executes_as_is_read_from_the_engine_layers():
    from bench.backends.tensorrt import engine_precision

    def layer(kind, fmt):
        return {"Name": "l", "LayerType": kind, "Outputs": [{"Name": "o", "Format/Datatype": fmt}]}

    info = {"Layers": [layer("CaskConvolution", "Channel major FP16 format where channel % 8 == 0")] * 5
            + [layer("CaskConvolution", "Row major linear FP32")] + [layer("Reformat", "Row major linear FP32")] * 3}
    assert engine_precision(info) == "mixed: fp16 x5, fp32 x1"
    int8 = {"Layers": [layer("CaskConvolution", "Four wide channel vectorized row major Int8 format")] * 4}
    assert engine_precision(int8) == "int8"
    assert engine_precision({"Layers": ["conv1", "conv2"]}) == "unknown"  # built without detailed verbosity


def test_int8_calibration_batches_fit_the_engine_profile(models_dir, tmp_path):
    from bench.backends.tensorrt import TensorrtBackend as Trt
    from bench.cache import ArtifactCache
    from bench.jobs import _request
    from bench.models.prepare import for_cell, materialize
    from bench.runner import plan as make_plan

    cfg = _cfg(backends=["onnxruntime"], batch_sizes=[4, 8])
    p = make_plan(cfg, models_dir)
    info = next(iter(p.models.values()))
    cache = ArtifactCache(tmp_path / "c")
    backend = Trt()
    model = for_cell(materialize(info), 8, cache, backend.keeps_dynamic_batch)
    req = _request(cfg, backend, model, "int8", 8, tmp_path, cache)
    lo, opt, hi = profile_shapes(req.shapes, req.batch_sizes, 8)[info.inputs[0].name]
    feeds = list(req.calibration())
    assert sum(f[info.inputs[0].name].shape[0] for f in feeds) == cfg.calibration.samples  # batches of the cell's size
    for feed in feeds:
        shape = feed[info.inputs[0].name].shape
        assert lo[0] <= shape[0] <= hi[0] and shape == opt


def test_tensorrt_says_why_it_is_unavailable():
    a = TensorrtBackend().availability()
    if a.usable:
        pytest.skip("a GPU with TensorRT is present")
    assert a.reason.startswith(("tensorrt is not installed", "no CUDA device", "the CUDA runtime library"))


@pytest.mark.gpu
@pytest.mark.skipif(not TensorrtBackend().availability().usable, reason=TensorrtBackend().availability().reason or "n/a")
def test_tensorrt_engine_runs_and_validates(models_dir, tmp_path):
    cfg = _cfg(backends=["tensorrt"], batch_sizes=[1, 4])
    cells = pd.read_csv(execute(plan(cfg, models_dir), tmp_path / "r", cache_dir=tmp_path / "c") / "cells.csv")
    assert set(cells["status"]) == {"ok"} and cells["accuracy_ok"].all()


def test_image_folder_feeds_validation_and_calibration(models_dir, tmp_path):
    import numpy as np
    from PIL import Image

    from bench.inputs import calibration_set, validation_feeds

    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (48 + i, 40, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    (folder / "notes.txt").write_text("ignored")
    cfg = _cfg(backends=["onnxruntime"], precisions=["fp32", "int8"],
               models=[{"name": "cnn", "source": "zoo:resnet18-tiny", "data": {"images": str(folder), "resize": 36}}],
               calibration={"samples": 4})
    p = plan(cfg, models_dir)
    info, data = p.models["cnn"], cfg.model("cnn").data
    feeds = validation_feeds(info, data, 2, 0, 2)
    x = feeds[0]["input"]
    assert x.shape == (2, 3, 32, 32) and x.dtype == np.float32
    # ImageNet normalization of values in [0, 1]: the range is about [-2.1, 2.6]
    assert -2.2 < x.min() < -1.5 and 2.0 < x.max() < 2.7
    np.testing.assert_array_equal(feeds[1]["input"][1], validation_feeds(info, data, 1, 0, 4)[3]["input"][0])
    cal = calibration_set(info, data, 0, 4, skip=4)
    assert len(cal) == 4 and cal[0]["input"].shape == (1, 3, 32, 32)
    cells = pd.read_csv(execute(p, tmp_path / "r", isolate=False, cache_dir=tmp_path / "c") / "cells.csv")
    assert set(cells["status"]) == {"ok"} and cells["validated"].all()
    # 5 images cannot hold 4 for validation (batch 2 x 2 iterations) and 4 for calibration: the
    # int8 row says how many it reused, and that its accuracy is flattered.
    int8 = cells[cells.precision == "int8"].iloc[0]
    assert int8["calibration_overlap"] == 3 and "accuracy is flattered" in int8["accuracy_note"]


def test_calibration_images_follow_the_validation_images(tmp_path):
    import numpy as np
    from PIL import Image

    from bench.config import ImageData
    from bench.inputs import calibration_overlap, calibration_set, validation_feeds
    from bench.models.prepare import InputInfo, ModelInfo

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(12):  # distinguishable images: a constant colour each
        Image.fromarray(np.full((40, 40, 3), 20 * i, dtype=np.uint8)).save(folder / f"{i:02d}.png")
    info = ModelInfo("m", "m.onnx", (InputInfo("x", "float32", ("batch", 3, 32, 32)),), "unknown", tmp_path / "m.onnx", None, 0, 17)
    data = ImageData(images=str(folder), resize=36)
    seen = {float(f["x"][k].mean()) for f in validation_feeds(info, data, 4, 0, 2) for k in range(4)}  # 8 images
    cal = {float(f["x"][0].mean()) for f in calibration_set(info, data, 0, 2, skip=8)}
    assert len(seen) == 8 and len(cal) == 2 and not seen & cal  # before: offset = samples (2), inside validation's 8
    assert calibration_overlap(data, 2, 8) == 0 and calibration_overlap(data, 6, 8) == 2


def test_bad_image_folder_is_a_clear_error(models_dir, tmp_path):
    from bench.errors import BenchError

    cfg = _cfg(models=[{"name": "cnn", "source": "zoo:resnet18-tiny", "data": {"images": str(tmp_path / "none")}}])
    with pytest.raises(BenchError, match=r"models\[0\] \(cnn\).data.images: .*none is not a directory"):
        plan(cfg, models_dir)
    (tmp_path / "empty").mkdir()
    cfg = _cfg(models=[{"name": "cnn", "source": "zoo:resnet18-tiny", "data": {"images": str(tmp_path / "empty")}}])
    with pytest.raises(BenchError, match="holds no .jpg, .jpeg, .png files"):
        plan(cfg, models_dir)


def test_model_and_output_tolerances_override_the_config(models_dir, tmp_path):
    cfg = _cfg(backends=["onnxruntime"], precisions=["int8"], tolerances={"int8": {"atol": 1e-7, "rtol": 1e-7}},
               models=[{"name": "cnn", "source": "zoo:resnet18-tiny", "tolerances": {"int8": {"atol": 5, "rtol": 5}}}])
    assert cfg.tolerance("int8", "cnn").atol == 5 and cfg.tolerance("int8").atol == 1e-7
    (row,) = pd.read_csv(execute(plan(cfg, models_dir), tmp_path / "a", isolate=False, cache_dir=tmp_path / "c") / "cells.csv").itertuples()
    assert row.accuracy_ok and row.atol == 5
    cfg = _cfg(backends=["onnxruntime"], precisions=["int8"],
               models=[{"name": "cnn", "source": "zoo:resnet18-tiny",
                        "output_tolerances": {"output": {"int8": {"atol": 1e-7, "rtol": 1e-7}}}}])
    (row,) = pd.read_csv(execute(plan(cfg, models_dir), tmp_path / "b", isolate=False, cache_dir=tmp_path / "c") / "cells.csv").itertuples()
    assert not row.accuracy_ok and "beyond atol" in row.accuracy_note


def test_int8_libraries_are_keyed_by_their_calibration(models_dir, tmp_path):
    """Another seed calibrates on other data: the int8 library is built again, not reused (it was,
    reported cache_hit=True); the same seed finds it."""
    def run(seed, rid):
        cfg = _cfg(backends=["tvm"], precisions=["int8"], batch_sizes=[2], seed=seed)
        return pd.read_csv(execute(plan(cfg, models_dir), tmp_path / "r", run_id=rid, isolate=False, cache_dir=tmp_path / "c")
                           / "cells.csv").iloc[0]

    first, other_seed, same_again = run(0, "s0"), run(1, "s1"), run(1, "s1-again")
    assert not first["cache_hit"] and not other_seed["cache_hit"] and same_again["cache_hit"]
    assert first["artifact_dir"] != other_seed["artifact_dir"] == same_again["artifact_dir"]
