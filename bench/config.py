"""The benchmark config: a YAML grid validated into immutable objects, and its expansion into cells.

`load_config(path)` and `Config.model_validate(dict)` build the same objects, so the CLI and the
Python API agree. Validation has no side effects: nothing is built, compiled or written here.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Collection, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bench.errors import BenchError
from bench.registry import BACKENDS, DEFAULT_SCENARIO, SCENARIOS, options_model, scenario_flag

Precision = Literal["fp32", "fp16", "int8"]
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")
# The precision of a cell that runs a model which arrives quantized as it is (Config.grid):
# no conversion, judged by int8's tolerances.
AS_GIVEN = "int8 (as given)"


def judged_as(precision: str) -> str:
    """The precision whose tolerances judge a cell: int8's for one run as given."""
    return "int8" if precision == AS_GIVEN else precision
BATCH = "batch"  # the token in input_shapes that stands for the grid's batch size


class _Frozen(BaseModel):
    # strict: no bool or string passes for a number (YAML's `true` and "4" are refused, not coerced)
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Tolerance(_Frozen):
    """An output passes when every element is within atol or rtol of the reference
    (Polygraphy's elementwise rule), and its cosine similarity is at least min_cosine.

    `scale: range` reads atol as a fraction of the reference output's range (max - min over the
    validation inputs), so each output is judged in its own units: a detector's boxes in pixels
    (atol 0.01 = 1% of the image's span) beside its scores in [0, 1]."""

    atol: float = Field(ge=0)
    rtol: float = Field(ge=0)
    min_cosine: float = Field(default=0.0, ge=-1, le=1)
    scale: Literal["absolute", "range"] = "absolute"


# fp32 kernels differ only by summation order. fp16 keeps ~3 significant digits, and errors grow
# with depth: a tiny ResNet's logits (magnitude ~2) moved by up to 0.04 under TVM's fp16 kernels.
# int8 is coarse elementwise (up to 0.46 on the same model, ORT and TVM alike, cosine 0.985), so its
# verdict leans on cosine similarity.
DEFAULT_TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(atol=1e-4, rtol=1e-3, min_cosine=0.9999),
    "fp16": Tolerance(atol=5e-2, rtol=5e-2, min_cosine=0.999),
    "int8": Tolerance(atol=5e-1, rtol=5e-1, min_cosine=0.98),
}

ShapeDim = Union[int, Literal["batch"]]
Scenario = str  # a name in bench.registry.SCENARIOS
SINGLE_STREAM = DEFAULT_SCENARIO
LOCAL_TARGET = "local"


class ImageData(_Frozen):
    """A folder of JPEG/PNG images, preprocessed the usual way: shorter side resized to `resize`,
    centre crop to the input's height and width, scaled to [0, 1], normalized, NCHW."""

    images: str
    resize: int = Field(default=256, ge=1)
    mean: list[float] = Field(default_factory=lambda: [0.485, 0.456, 0.406], min_length=3, max_length=3)
    std: list[float] = Field(default_factory=lambda: [0.229, 0.224, 0.225], min_length=3, max_length=3)


class ModelSpec(_Frozen):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    source: str = Field(description="zoo:<arch> or a path to an .onnx file")
    input_shapes: dict[str, list[ShapeDim]] = Field(default_factory=dict)
    dims: dict[str, int] = Field(default_factory=dict, description="values for the model's named dynamic dimensions")
    input_ranges: dict[str, list[float]] = Field(
        default_factory=dict, description="[low, high) of the seeded values per input (integer ids, say)")
    data: ImageData | None = Field(default=None, description="real images for validation and int8 calibration")
    tolerances: dict[Precision, Tolerance] = Field(default_factory=dict, description="overrides for this model")
    output_tolerances: dict[str, dict[Precision, Tolerance]] = Field(
        default_factory=dict, description="overrides for single outputs of this model")
    builder: Literal["onnx", "torch"] | None = Field(
        default=None, description="how a zoo model is built: 'onnx' (the default) writes the graph with numpy (no PyTorch); "
                                  "'torch' exports the PyTorch module with torch.onnx (pip install 'bench[models]'). Same "
                                  "weights, same operators, same outputs")

    @field_validator("source")
    @classmethod
    def _source_form(cls, v: str) -> str:
        if v.startswith("zoo:"):
            from bench.models.zoo import ARCHITECTURES

            arch = v[4:]
            if arch not in ARCHITECTURES:
                raise ValueError(f"unknown zoo architecture {arch!r}; valid: {', '.join(sorted(ARCHITECTURES))}")
        elif not v.endswith(".onnx"):
            raise ValueError("must be 'zoo:<arch>' or a path ending in .onnx")
        return v

    @field_validator("input_shapes")
    @classmethod
    def _shapes(cls, v: dict[str, list[ShapeDim]]) -> dict[str, list[ShapeDim]]:
        for name, dims in v.items():
            if not dims:
                raise ValueError(f"input {name!r}: shape is empty")
            for d in dims:
                if isinstance(d, int) and d < 1:
                    raise ValueError(f"input {name!r}: dimension {d} must be >= 1 or 'batch'")
        return v

    @field_validator("dims")
    @classmethod
    def _dims(cls, v: dict[str, int]) -> dict[str, int]:
        for name, d in v.items():
            if d < 1:
                raise ValueError(f"dimension {name!r}: {d} must be >= 1")
        return v

    @field_validator("input_ranges")
    @classmethod
    def _ranges(cls, v: dict[str, list[float]]) -> dict[str, list[float]]:
        for name, r in v.items():
            if len(r) != 2 or not r[0] < r[1]:
                raise ValueError(f"input {name!r}: a range is [low, high) with low < high, got {r}")
        return v

    @model_validator(mode="after")
    def _zoo_has_no_dims(self) -> "ModelSpec":
        if self.is_zoo and (self.dims or self.input_ranges):
            raise ValueError("dims and input_ranges are for ONNX files; zoo models take input_shapes")
        if not self.is_zoo and self.builder is not None:
            raise ValueError(f"builder is for zoo models (zoo:<arch>); {self.source!r} is an ONNX file already")
        return self

    @property
    def is_zoo(self) -> bool:
        return self.source.startswith("zoo:")


OFFLINE_MIN_WINDOW_S = 1.0  # below it, offline throughput windows are too short to trust (config warning)


class TimingConfig(_Frozen):
    """Warm up, then iterate until both min_iterations and min_time_s are reached (or max_iterations)."""

    warmup: int = Field(default=5, ge=0)
    min_iterations: int = Field(default=10, ge=1)
    min_time_s: float = Field(default=1.0, ge=0)
    max_iterations: int = Field(default=100_000, ge=1)
    max_warmup_extensions: int = Field(
        default=2, ge=0, description="a process whose first quarter of samples is still slower than the rest (warm-up not "
        "over) discards them as warm-up and times again, at most this many times; then its row is flagged")

    @model_validator(mode="after")
    def _bounds(self) -> "TimingConfig":
        if self.max_iterations < self.min_iterations:
            raise ValueError("max_iterations must be >= min_iterations")
        return self


class LoadGenConfig(_Frozen):
    """MLPerf LoadGen's settings for the scenarios other than single_stream (see bench.loadgen)."""

    min_duration_s: float = Field(default=5.0, gt=0, description="each LoadGen run lasts at least this long")
    min_query_count: int = Field(
        default=512, ge=1, description="and issues at least this many queries; LoadGen's early-stopping rule "
        "for a 99th percentile needs about 460 queries with none over the bound")
    target_qps: list[float] = Field(default_factory=list, description="server: arrival rates in queries per second (a grid axis)")
    load: list[float] = Field(
        default_factory=list, description="server: arrival rates as fractions of the capacity measured in each cell "
        "(a grid axis); portable across machines, unlike target_qps")
    latency_bound_ms: float | None = Field(default=None, gt=0, description="server and max_qps: the bound the latency percentile must meet")
    latency_percentile: float = Field(default=0.99, gt=0, lt=1, description="server and max_qps: the percentile held to the bound")
    samples_per_query: int = Field(default=8, ge=1, description="multi_stream: samples in each query")
    max_qps_probes: int = Field(default=6, ge=2, description="max_qps: server runs spent searching for the highest valid rate")

    @field_validator("target_qps", "load")
    @classmethod
    def _rates(cls, v: list[float]) -> list[float]:
        if any(not x > 0 for x in v):
            raise ValueError(f"rates must be > 0, got {v}")
        if len(set(v)) != len(v):
            raise ValueError(f"rates are listed more than once: {v}")
        return v


class ExecutorConfig(_Frozen):
    """Where cells run (bench.executors); the CLI's --executor and --scheduler override it. Not part
    of the config's hash: where a cell ran is recorded per row, and a run may resume elsewhere."""

    kind: Literal["local", "dask"] = "local"
    scheduler: str | None = Field(default=None, description="dask: the scheduler's address, tcp://HOST:PORT")


class ValidationConfig(_Frozen):
    iterations: int = Field(default=2, ge=1, description="seeded input batches compared against the reference")


class CalibrationConfig(_Frozen):
    samples: int = Field(default=32, ge=1, description="batch-1 inputs that calibrate int8 quantization")


class ReferenceSpec(_Frozen):
    backend: str = "onnxruntime"
    precision: Precision = "fp32"


class ExcludeRule(_Frozen):
    """A cell is excluded when it matches every key given in the rule."""

    model: str | None = None
    backend: str | None = None
    precision: Precision | None = None
    batch_size: int | None = None
    scenario: Scenario | None = None
    streams: int | None = None
    target: str | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> "ExcludeRule":
        fields = type(self).model_fields
        if all(getattr(self, k) is None for k in fields):
            raise ValueError(f"an exclude rule needs at least one of {', '.join(fields)}")
        return self

    def matches(self, cell: "Cell") -> bool:
        return all(want is None or want == getattr(cell, key) for key, want in self)


@dataclass(frozen=True, order=True)
class Cell:
    """One point of the grid."""

    model: str
    backend: str
    precision: str
    batch_size: int
    scenario: str = SINGLE_STREAM
    streams: int = 1
    rate: str = ""  # server: "qps<N>" (target_qps) or "load<F>" (a fraction of the measured capacity)
    target: str = LOCAL_TARGET  # the machine class it runs on (bench.executors)

    @property
    def label(self) -> str:
        base = f"{self.model} {self.backend} {self.precision} b{self.batch_size}"
        if self.scenario != SINGLE_STREAM or self.streams != 1:
            base += f" {self.scenario}" + (f" {self.rate}" if self.rate else "") + f" x{self.streams} streams"
        return base if self.target == LOCAL_TARGET else f"{base} on {self.target}"

    @property
    def server_rate(self) -> tuple[str, float] | None:
        """("qps", N) or ("load", F) for a server cell."""
        for kind in ("qps", "load"):
            if self.rate.startswith(kind):
                return kind, float(self.rate[len(kind):])
        return None


def _default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class Config(_Frozen):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    models: list[ModelSpec] = Field(min_length=1)
    backends: list[str] = Field(min_length=1)
    precisions: list[Precision] = Field(default_factory=lambda: ["fp32"], min_length=1)
    batch_sizes: list[int] = Field(min_length=1)
    scenarios: list[Scenario] = Field(default_factory=lambda: [SINGLE_STREAM], min_length=1,
                                      description="how queries arrive (see bench.loadgen); a grid axis")
    streams: list[int] = Field(default_factory=lambda: [1], min_length=1,
                               description="requests in flight, each on its own compiled instance; a grid axis "
                               "of the LoadGen scenarios (single_stream is one caller in a loop)")
    loadgen: LoadGenConfig = Field(default_factory=LoadGenConfig)
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)
    targets: list[str] = Field(default_factory=lambda: [LOCAL_TARGET], min_length=1,
                               description="machine classes (Dask worker resource labels) each cell runs on; a grid axis")
    exclude: list[ExcludeRule] = Field(default_factory=list)
    reference: ReferenceSpec = Field(default_factory=ReferenceSpec)
    timing: TimingConfig = Field(default_factory=TimingConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    tolerances: dict[Precision, Tolerance] = Field(default_factory=dict)
    seed: int = Field(default=0, ge=0)
    threads: int = Field(default_factory=_default_threads, ge=1)
    backend_threads: dict[str, int] = Field(default_factory=dict, description="per-backend override of threads")
    repeats: int = Field(default=3, ge=1, description="fresh worker processes timing each cell: the process is the unit of measurement")
    max_repeats: int | None = Field(default=None, ge=1, description="adaptive repeats: after `repeats`, add processes to a "
                                    "cell until its median's 95% interval is within +-interval_target, at most this many in all")
    interval_target: float = Field(default=0.02, gt=0, lt=1, description="adaptive repeats: the half-width of the median's "
                                   "95% interval asked for, relative to the median")
    interleave: bool = Field(default=False, description="time the cells' processes in a shuffled order (seeded), not "
                             "cell after cell: drift over the sweep hits every cell alike instead of the cells timed last")
    cell_timeout_s: float = Field(default=1800.0, gt=0, description="a cell's worker is killed after this long")
    profile: bool = Field(default=False, description="after a cell's timed processes, profile it per layer with the engine's "
                          "own profiler, in a process of its own, into layers.parquet (bench.profiling; or later: bench profile RUN)")
    goldens: str | None = Field(default=None, description="directory of stored reference outputs (bench golden save)")
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)
    backend_options: dict[str, dict[str, Any]] = Field(default_factory=dict, description="options per backend name")

    @field_validator("backends")
    @classmethod
    def _known_backends(cls, v: list[str]) -> list[str]:
        for b in v:
            if b not in BACKENDS:
                raise ValueError(f"unknown backend {b!r}; valid: {', '.join(BACKENDS)}")
        if len(set(v)) != len(v):
            raise ValueError("backends are listed more than once")
        return v

    @field_validator("backend_options")
    @classmethod
    def _typed_options(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Each backend's options against the model it declares (bench.registry.options_model)."""
        for name, opts in v.items():
            if name not in BACKENDS:
                raise ValueError(f"{name}: unknown backend; valid: {', '.join(BACKENDS)}")
            model = options_model(name)
            if model is None:
                continue
            if not isinstance(opts, dict):
                raise ValueError(f"{name}: options are a mapping of keys, got {type(opts).__name__}")
            try:
                model.model_validate(opts)
            except ValidationError as e:
                raise ValueError("; ".join(_option_error(name, model, x) for x in e.errors())) from None
        return v

    @field_validator("batch_sizes")
    @classmethod
    def _batches(cls, v: list[int]) -> list[int]:
        if any(b < 1 for b in v):
            raise ValueError("batch sizes must be >= 1")
        if len(set(v)) != len(v):
            raise ValueError("batch sizes are listed more than once")
        return v

    @field_validator("scenarios")
    @classmethod
    def _known_scenarios(cls, v: list[str]) -> list[str]:
        for s in v:
            if s not in SCENARIOS:
                raise ValueError(f"unknown scenario {s!r}; valid: {', '.join(SCENARIOS)}")
        return v

    @field_validator("precisions", "scenarios")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"listed more than once: {', '.join(sorted({x for x in v if v.count(x) > 1}))}")
        return v

    @field_validator("targets")
    @classmethod
    def _targets(cls, v: list[str]) -> list[str]:
        for t in v:
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", t) or t in ("bench_slot", "compile_slot"):
                raise ValueError(f"target {t!r}: a machine class is a resource label (letters, digits, . _ -), not bench_slot or compile_slot")
        if len(set(v)) != len(v):
            raise ValueError("targets are listed more than once")
        return v

    @field_validator("streams")
    @classmethod
    def _streams(cls, v: list[int]) -> list[int]:
        if any(n < 1 for n in v):
            raise ValueError("streams must be >= 1")
        if len(set(v)) != len(v):
            raise ValueError("streams are listed more than once")
        return v

    @model_validator(mode="after")
    def _cross_checks(self) -> "Config":
        names = [m.name for m in self.models]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"model names must be unique; repeated: {', '.join(dupes)}")
        if self.reference.backend not in BACKENDS:
            raise ValueError(
                f"reference.backend {self.reference.backend!r} is unknown; valid: {', '.join(BACKENDS)}"
            )
        for b in self.backend_options:
            if b not in self.backends and b != self.reference.backend:
                raise ValueError(f"backend_options.{b}: not in backends {self.backends}")
        for b, n in self.backend_threads.items():
            if b not in self.backends:
                raise ValueError(f"backend_threads.{b}: not in backends {self.backends}")
            if n < 1:
                raise ValueError(f"backend_threads.{b}: must be >= 1")
        for i, rule in enumerate(self.exclude):
            if rule.model is not None and rule.model not in names:
                raise ValueError(f"exclude[{i}].model {rule.model!r} is not a model of this config; valid: {', '.join(names)}")
            if rule.backend is not None and rule.backend not in self.backends:
                raise ValueError(f"exclude[{i}].backend {rule.backend!r} is not in backends {self.backends}")
        lg = self.loadgen
        for spec in (SCENARIOS[s] for s in self.scenarios):
            missing = spec.requires(self) if spec.requires is not None else None
            if missing:
                raise ValueError(missing)
            if spec.bounded and lg.latency_bound_ms is None:
                raise ValueError(f"scenario {spec.name} needs loadgen.latency_bound_ms (the bound its "
                                 f"{lg.latency_percentile:.0%} latency percentile must meet)")
        if not self.grid():
            raise ValueError("the grid is empty: every cell is excluded")
        return self

    @property
    def uses_loadgen(self) -> bool:
        return any(SCENARIOS[s].loadgen for s in self.scenarios)

    def threads_per_stream(self, backend: str, streams: int) -> int:
        """Intra-op threads of each stream's instance: the backend's threads split between its
        streams, so streams x threads stays within them (at least one each)."""
        return max(1, self.threads_for(backend) // streams)

    def threads_for(self, backend: str) -> int:
        return self.backend_threads.get(backend, self.threads)

    @model_validator(mode="after")
    def _adaptive_repeats(self) -> "Config":
        if self.max_repeats is not None and self.max_repeats < self.repeats:
            raise ValueError(f"max_repeats ({self.max_repeats}) must be at least repeats ({self.repeats}): adaptive repeats "
                             "add processes after the first `repeats`")
        return self

    def warnings(self) -> list[str]:
        """Settings that are legal but make the figures worse: oversubscribed cores."""
        cores = _default_threads()
        out = [
            f"{b} uses {self.threads_for(b)} threads on {cores} available cores: threads will contend and latency will suffer"
            for b in self.backends
            if self.threads_for(b) > cores
        ]
        out += [f"streams: {n} streams on {cores} available cores: more requests in flight than cores, so they queue for the "
                "cores and the figures measure contention" for n in self.streams if n > cores]
        offline = [s for s in self.scenarios if scenario_flag(s, "loadgen") and scenario_flag(s, "throughput")]
        if offline and self.loadgen.min_duration_s < OFFLINE_MIN_WINDOW_S:
            out.append(f"loadgen.min_duration_s: {self.loadgen.min_duration_s:g} s: offline throughput ({', '.join(offline)}) is "
                       f"measured over LoadGen runs about that long; under {OFFLINE_MIN_WINDOW_S:g} s a moment of noise moves it by "
                       "10-20% (an overloaded server run, which drains for longer, can then complete faster than offline)")
        return out

    def tolerance(self, precision: str, model: str | None = None, output: str | None = None) -> Tolerance:
        """The most specific tolerance: per output, per model, per config, then the defaults."""
        precision = judged_as(precision)
        spec = self.model(model) if model is not None else None
        if spec is not None and output is not None and precision in spec.output_tolerances.get(output, {}):
            return spec.output_tolerances[output][precision]  # type: ignore[index]
        if spec is not None and precision in spec.tolerances:
            return spec.tolerances[precision]  # type: ignore[index]
        return self.tolerances.get(precision, DEFAULT_TOLERANCES[precision])  # type: ignore[index]

    def model(self, name: str) -> ModelSpec:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(name)

    def grid(self, quantized: Collection[str] = ()) -> list[Cell]:
        """Every cell. A model named in `quantized` arrives quantized: its cells of the first
        precision run it as given (AS_GIVEN); its other precisions' cells stay, to be skipped with
        the reason (bench.jobs). Runs store the names (meta.json `quantized_models`)."""
        specs = {s: SCENARIOS[s] for s in self.scenarios}
        rates = {s: spec.rates(self.loadgen) if spec.rates is not None else [""] for s, spec in specs.items()}
        cells = [
            Cell(m.name, b, p, bs, s, n, r, t)
            for t in self.targets
            for m in self.models
            for b in self.backends
            for p in self.precisions
            for bs in self.batch_sizes
            for s in self.scenarios
            for n in (self.streams if specs[s].streams else [1])  # single_stream: one caller in a loop, by definition
            for r in rates[s]
        ]
        cells = [c for c in cells if not any(r.matches(c) for r in self.exclude)]
        return [replace(c, precision=AS_GIVEN) if c.model in quantized and c.precision == self.precisions[0] else c for c in cells]

    def canonical(self) -> dict[str, Any]:
        """The expanded config with every default filled in, as stored in meta.json."""
        data = self.model_dump(mode="json")
        data["tolerances"] = {p: self.tolerance(p).model_dump() for p in PRECISIONS}
        return data

    def digest(self) -> str:
        what = {k: v for k, v in self.canonical().items() if k != "executor"}  # where, not what, is measured
        blob = json.dumps(what, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()


def _option_error(backend: str, model: type[BaseModel], err: Any) -> str:
    key = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        return f"{backend}.{key}: unknown option; {backend} takes: {describe_options(model)}"
    valid = model.model_fields.get(str(err["loc"][0])) if err["loc"] else None
    hint = f" ({valid.description})" if valid is not None and valid.description else ""
    return f"{backend}.{key}: {err['msg']}, got {err.get('input')!r}{hint}"


def describe_options(model: type[BaseModel] | None) -> str:
    """'trials=64, search=evolutionary|replay-trace, ...': each option with its default (or choices)."""
    if model is None:
        return "(not declared)"
    parts = []
    for name, f in model.model_fields.items():
        default = f.get_default(call_default_factory=True)
        parts.append(f"{name}={default}" if default is not None else f"{name}=<unset>")
    return ", ".join(parts) or "none"


# --- loading from YAML, with line numbers in errors -------------------------------------------


def _line_index(node: yaml.Node, path: tuple = (), out: dict | None = None) -> dict[tuple, int]:
    """Map each key path in a composed YAML document to its 1-based line."""
    out = {} if out is None else out
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = k.value
            out[path + (key,)] = k.start_mark.line + 1
            _line_index(v, path + (key,), out)
            out[path + (key,)] = k.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_index(item, path + (i,), out)
    return out


def _loc_str(loc: tuple) -> str:
    s = ""
    for part in loc:
        s += f"[{part}]" if isinstance(part, int) else (f".{part}" if s else str(part))
    return s or "<top level>"


def _format_errors(err: ValidationError, source: str, lines: dict[tuple, int]) -> str:
    msgs = []
    for e in err.errors():
        # pydantic appends union-member and validator tags to loc; keep the data path only
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and ("[" in p or p.startswith("function-"))))
        line = None
        for n in range(len(loc), -1, -1):
            if loc[:n] in lines:
                line = lines[loc[:n]]
                break
        where = f"{source}:{line}" if line else source
        msg = re.sub(r"^Value error, ", "", e["msg"])
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        msgs.append(f"{where}: {_loc_str(loc)}: {msg}")
    return "\n".join(msgs)


def config_from_dict(data: Any, source: str = "<config>", lines: dict[tuple, int] | None = None) -> Config:
    if not isinstance(data, dict):
        raise BenchError(f"{source}: the config must be a mapping of keys (name, models, backends, ...), got {type(data).__name__}")
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise BenchError(_format_errors(e, source, lines or {})) from None


def load_config(path: str | os.PathLike) -> Config:
    p = Path(path)
    if not p.is_file():
        raise BenchError(f"{p}: config file not found")
    text = p.read_text()
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{p}:{mark.line + 1}:{mark.column + 1}" if mark else str(p)
        problem = getattr(e, "problem", None) or str(e)
        raise BenchError(f"{where}: malformed YAML: {problem}") from None
    if node is None:
        raise BenchError(f"{p}: the config file is empty")
    dupes = _duplicate_keys(node)
    if dupes:
        raise BenchError("\n".join(f"{p}:{second}: {_loc_str(path)}: duplicate key (first at line {first}); "
                                    "YAML would keep the last silently" for path, first, second in dupes))
    return config_from_dict(data, str(p), _line_index(node))


def _duplicate_keys(node: yaml.Node, path: tuple = ()) -> list[tuple[tuple, int, int]]:
    """(key path, first line, repeated line) for every key a YAML mapping repeats."""
    found: list[tuple[tuple, int, int]] = []
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for k, v in node.value:
            line = k.start_mark.line + 1
            if k.value in seen:
                found.append((path + (k.value,), seen[k.value], line))
            else:
                seen[k.value] = line
            found += _duplicate_keys(v, path + (k.value,))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found += _duplicate_keys(item, path + (i,))
    return found
