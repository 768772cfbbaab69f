"""Each built-in backend's typed options (`backend_options.<backend>` in a config): a leaf module,
so that a config is validated without importing any engine. A backend module names its class here
as its `Options`; bench.registry maps backend names to them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from bench.gpu import ARCH_PATTERN


class BackendOptions(BaseModel):
    """Base of each backend's `Options`: the keys `backend_options.<backend>` may set, typed, with
    their defaults. Unknown keys and bad values are refused when the config is loaded."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class OrtOptions(BackendOptions):
    graph_optimization_level: Literal["disabled", "basic", "extended", "all"] = Field(
        "all", description="ONNX Runtime's graph optimizations: disabled, basic, extended or all")


class OrtGpuOptions(OrtOptions):
    tf32: bool = Field(False, description="allow TF32 math in fp32 convolutions and GEMMs (CUDA provider's use_tf32)")
    device_id: int = Field(0, ge=0, description="the CUDA device")


class TvmOptions(BackendOptions):
    """The untuned CPU variant takes no options."""


class TunedOptions(BackendOptions):
    trials: int = Field(64, ge=1, description="total MetaSchedule trial budget")
    min_trials_per_task: int = Field(2, ge=0, description="trials every task gets at least")
    trials_per_iter: int = Field(16, ge=1, description="candidates built and measured per batch")
    builder_timeout_s: int = Field(300, ge=1, description="seconds one build may take")
    search: Literal["evolutionary", "replay-trace"] = Field("evolutionary", description="evolutionary or replay-trace")
    weighting: Literal["flops", "profile"] = Field("flops", description="each task's share of the budget: flops (occurrences x "
                                                  "FLOPs) or profile (its measured time in the module as it runs before this "
                                                  "tuning: untuned, or with the schedules the database already holds)")


class CudaOptions(BackendOptions):
    arch: str | None = Field(None, pattern=ARCH_PATTERN, description="sm_XY (or sm_XYa, sm_XYf) to compile for; default: the visible device's")


class CudaTunedOptions(TunedOptions, CudaOptions):
    weighting: Literal["flops"] = Field("flops", description="flops only: weighting by measured time profiles on the CPU")


class TrtOptions(BackendOptions):
    workspace_mb: int | None = Field(None, ge=1, description="builder workspace limit in MiB")
    builder_optimization_level: int | None = Field(None, ge=0, le=5, description="TensorRT builder optimization level 0-5")
    typing: Literal["strong", "weak"] = Field("strong", description="strong: types from the graph (10.x and 11.x); "
                                              "weak: precision builder flags and a calibrator (10.x only)")
    tf32: bool = Field(False, description="allow TF32 math in fp32 layers (off: an fp32 row is fp32 math)")
    trtexec: bool = Field(True, description="also time the engine with trtexec when it is on the PATH")
