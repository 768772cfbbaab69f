"""The names a config may use: backends with their typed options, and scenarios with what the grid
and the config's checks need to know of them. A leaf module (it imports no engine, no model code
and nothing of bench above bench.options), so validating a config imports nothing heavy.

Adding a backend is one module (bench/backends/<name>.py, or a plugin) and one entry in BACKENDS
(plus its options class in OPTIONS); adding a scenario is one module (bench/scenarios/<name>.py)
and one ScenarioSpec in SCENARIOS. Out-of-tree ones come through BENCH_PLUGINS: comma-separated
modules, each with `register(backends)` adding to BACKENDS and, optionally,
`register_scenarios(scenarios)` adding ScenarioSpecs. Plugins load the first time either table is
read (not on import: a plugin may import any of bench, this module included), in the main process
and in every worker.
"""

from __future__ import annotations

import importlib
import os
import threading
from dataclasses import dataclass
from typing import Any, Callable

from bench.options import (BackendOptions, CudaOptions, CudaTunedOptions, OrtGpuOptions, OrtOptions, TrtOptions, TunedOptions,
                           TvmOptions)

class _Names(dict):
    """A table of names that loads BENCH_PLUGINS before it is first read."""

    def __getitem__(self, key: Any) -> Any:
        _plugins_once()
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        _plugins_once()
        return super().__contains__(key)

    def __iter__(self) -> Any:
        _plugins_once()
        return super().__iter__()

    def __len__(self) -> int:
        _plugins_once()
        return super().__len__()

    def get(self, key: Any, default: Any = None) -> Any:
        _plugins_once()
        return super().get(key, default)

    def keys(self) -> Any:
        _plugins_once()
        return super().keys()

    def items(self) -> Any:
        _plugins_once()
        return super().items()

    def values(self) -> Any:
        _plugins_once()
        return super().values()


# name -> "module:factory" (or a factory); a factory takes no argument and returns a Backend.
BACKENDS: dict[str, str | Callable[[], Any]] = _Names({
    "onnxruntime": "bench.backends.ort:OnnxRuntimeBackend",
    "tvm": "bench.backends.tvm:TvmBackend",
    "tvm_tuned": "bench.backends.tvm:TvmTunedBackend",
    "tvm_cuda": "bench.backends.tvm_cuda:TvmCudaBackend",
    "tvm_cuda_tuned": "bench.backends.tvm_cuda:TvmCudaTunedBackend",
    "onnxruntime_cuda": "bench.backends.ort:OnnxRuntimeCudaBackend",
    "onnxruntime_trt": "bench.backends.ort:OnnxRuntimeTensorrtBackend",
    "tensorrt": "bench.backends.tensorrt:TensorrtBackend",
})

# The built-in backends' options. A plugin backend's come from its class attribute `Options`.
OPTIONS: dict[str, type[BackendOptions]] = {
    "onnxruntime": OrtOptions, "onnxruntime_cuda": OrtGpuOptions, "onnxruntime_trt": OrtGpuOptions,
    "tvm": TvmOptions, "tvm_tuned": TunedOptions, "tvm_cuda": CudaOptions, "tvm_cuda_tuned": CudaTunedOptions,
    "tensorrt": TrtOptions,
}


def load(target: str | Callable[[], Any]) -> Any:
    """What a "module:attr" entry names (imported now), or the entry itself when it is callable."""
    if not isinstance(target, str):
        return target
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def options_model(name: str) -> type[BackendOptions] | None:
    """The pydantic model of a backend's `backend_options`: a built-in's from OPTIONS (no engine
    imported), a plugin's from its class's `Options` (None: passed through unchecked)."""
    if name in OPTIONS:
        return OPTIONS[name]
    if name not in BACKENDS:
        raise KeyError(f"unknown backend {name!r}; valid: {', '.join(BACKENDS)}")
    backend = type(load(BACKENDS[name])())
    if not hasattr(backend, "Options"):
        raise ValueError(f"{name}: the plugin backend {backend.__qualname__} declares no `Options` (None for unchecked options); "
                         "subclass bench.backends.base.BackendBase")
    return backend.Options


@dataclass(frozen=True)
class ScenarioSpec:
    """What the config, the grid, compare and the report know of a scenario; its runtime (how it
    is prepared and run in the timed region, how processes combine into a row) is `impl`'s, a
    bench.scenarios.base.Scenario."""

    name: str
    impl: str  # "module:Class" of the runtime
    loadgen: bool = False  # runs under MLPerf LoadGen (needs bench[loadgen]); its rows are reported "under load"
    streams: bool = False  # the `streams` axis applies (single_stream is one caller, by definition)
    throughput: bool = False  # compare reads time per sample (1/throughput), not latency
    bounded: bool = False  # held to loadgen.latency_bound_ms, which its rows carry
    rates: Callable[[Any], list[str]] | None = None  # the rate axis, from the config's loadgen settings
    requires: Callable[[Any], str | None] | None = None  # a config check of its own: what is missing, or None
    min_queries: int = 1  # LoadGen's early-stopping minimum for its percentile
    capacity_figure: str | None = None  # the column the report's capacity plot draws for it


def _server_rates(lg: Any) -> list[str]:
    return [f"qps{q:g}" for q in lg.target_qps] + [f"load{f:g}" for f in lg.load]


def _server_needs_rates(config: Any) -> str | None:
    if config.loadgen.target_qps or config.loadgen.load:
        return None
    return ("scenario server needs loadgen.target_qps (arrival rates in queries per second) or "
            "loadgen.load (rates as fractions of each cell's measured capacity, e.g. [0.5])")


DEFAULT_SCENARIO = "single_stream"
SCENARIOS: dict[str, ScenarioSpec] = _Names({
    "single_stream": ScenarioSpec("single_stream", "bench.scenarios.single_stream:SingleStream"),
    "offline": ScenarioSpec("offline", "bench.scenarios.offline:Offline", loadgen=True, streams=True, throughput=True,
                            capacity_figure="achieved_qps"),
    "server": ScenarioSpec("server", "bench.scenarios.server:Server", loadgen=True, streams=True, bounded=True,
                           rates=_server_rates, requires=_server_needs_rates, min_queries=460),
    "multi_stream": ScenarioSpec("multi_stream", "bench.scenarios.multi_stream:MultiStream", loadgen=True, streams=True,
                                 min_queries=662),
    "max_qps": ScenarioSpec("max_qps", "bench.scenarios.max_qps:MaxQps", loadgen=True, streams=True, throughput=True,
                            bounded=True, min_queries=460, capacity_figure="target_qps"),
})


def scenario_flag(name: Any, field: str) -> Any:
    """A stored row's scenario's spec field (`loadgen`, `throughput`, `bounded`, `capacity_figure`),
    or None for a name no longer registered (a plugin's, not loaded): tables read it as latency."""
    spec = SCENARIOS.get(str(name))
    return getattr(spec, field) if spec is not None else None


def scenario(name: str) -> ScenarioSpec:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise KeyError(f"unknown scenario {name!r}; valid: {', '.join(SCENARIOS)}") from None


_LOCK = threading.RLock()
_STATE: dict[str, Any] = {"loaded": False, "loading": False, "error": None}


def _plugins_once() -> None:
    """Load BENCH_PLUGINS once, before the first read: other threads wait for it, the plugin's own
    reads while it registers see the built-ins, and a plugin that failed fails every read."""
    if not _STATE["loaded"]:
        with _LOCK:
            if not _STATE["loaded"] and not _STATE["loading"]:
                _load_plugins()
    if _STATE["error"] is not None and not _STATE["loading"]:
        raise _STATE["error"]


def _load_plugins() -> None:
    """BENCH_PLUGINS: comma-separated modules, each with register(backends) adding entries to
    BACKENDS and optionally register_scenarios(scenarios). Read as the environment has it now (a
    worker calls this again with its parent's environment)."""
    with _LOCK:
        _STATE.update(loading=True, error=None)
        try:
            for module in filter(None, (m.strip() for m in os.environ.get("BENCH_PLUGINS", "").split(","))):
                try:
                    plugin = importlib.import_module(module)
                    if hasattr(plugin, "register"):
                        plugin.register(BACKENDS)
                    if hasattr(plugin, "register_scenarios"):
                        plugin.register_scenarios(SCENARIOS)
                except Exception as e:
                    _STATE["error"] = ImportError(f"BENCH_PLUGINS module {module!r} failed to register: {e}")
                    raise _STATE["error"] from e
        finally:
            _STATE.update(loading=False, loaded=True)
