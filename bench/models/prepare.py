"""From a config's model entry to an ONNX file on disk with known, fixable input shapes.

`inspect_model` is cheap and runs before a sweep starts, so a missing file, a corrupt model or an
unfixed dynamic dimension is a clear error with nothing written. `materialize` does the expensive
part (exporting a zoo model, cached under models/) inside the sweep.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bench.cache import ArtifactCache, file_sha256
from bench.config import BATCH, ModelSpec
from bench.errors import BenchError
from bench.models.freeze import model_sha256
from bench.models.blocks import OPSET
from bench.models.zoo import ARCHITECTURES, ZOO_VERSION


@dataclass(frozen=True)
class InputInfo:
    name: str
    dtype: str  # numpy dtype name
    dims: tuple  # ints and "batch"
    value_range: tuple[float, float] | None = None  # [low, high) of seeded values, when the config gives one

    def shape(self, batch: int) -> tuple[int, ...]:
        return tuple(batch if d == BATCH else int(d) for d in self.dims)


@dataclass(frozen=True)
class ModelInfo:
    """What a sweep needs to know about a model before anything is built."""

    name: str
    source: str
    inputs: tuple[InputInfo, ...]
    task: str  # classification, segmentation or unknown
    path: Path  # where the ONNX file is, or will be once materialized
    arch: str | None = None
    seed: int = 0
    opset: int | None = None
    quantized: str = ""  # the quantized operators of a model that arrives quantized (bench.models.graph.quantized_ops)
    builder: str = "onnx"  # how a zoo model is built: onnx or torch (ModelSpec.builder)

    def shapes(self, batch: int) -> dict[str, tuple[int, ...]]:
        return {i.name: i.shape(batch) for i in self.inputs}

    def to_dict(self) -> dict:
        """JSON-ready, for handing to a worker process."""
        return {"name": self.name, "source": self.source, "task": self.task, "path": str(self.path),
                "arch": self.arch, "seed": self.seed, "opset": self.opset, "quantized": self.quantized,
                "builder": self.builder,
                "inputs": [{"name": i.name, "dtype": i.dtype, "dims": list(i.dims), "value_range": i.value_range}
                           for i in self.inputs]}

    @classmethod
    def from_dict(cls, d: dict) -> "ModelInfo":
        inputs = tuple(InputInfo(i["name"], i["dtype"], tuple(i["dims"]), tuple(i["value_range"]) if i.get("value_range") else None)
                       for i in d["inputs"])
        return cls(d["name"], d["source"], inputs, d["task"], Path(d["path"]), d["arch"], d["seed"], d["opset"], d.get("quantized", ""),
                   d.get("builder", "onnx"))


@dataclass(frozen=True)
class PreparedModel:
    """An ONNX file a backend can be given. After `for_cell`, `path` and `sha256` are those of the
    model frozen to the cell's shapes, and `source_sha256` that of the file the config named."""

    info: ModelInfo
    path: Path
    sha256: str
    opset: int
    outputs: tuple[str, ...] = field(default_factory=tuple)
    source_sha256: str = ""
    facts: dict = field(default_factory=dict)  # what preparation did: nodes before/after, gflop

    @property
    def name(self) -> str:
        return self.info.name


def _resolve_path(source: str, config_dir: Path | None, where: str = "source") -> Path:
    p = Path(source).expanduser()
    # relative to the config file first (a config and its models travel together), then to the working directory
    candidates = [p] if p.is_absolute() else ([config_dir / p] if config_dir else []) + [Path.cwd() / p]
    candidates = list(dict.fromkeys(c.resolve() for c in candidates))
    for c in candidates:
        if c.is_file():
            return c
    raise BenchError(f"{where}.source: model file {source!r} not found (looked at: {', '.join(str(c) for c in candidates)})")


def _zoo_info(spec: ModelSpec, where: str, seed: int, models_dir: Path) -> ModelInfo:
    arch = ARCHITECTURES[spec.source[4:]]
    extra = set(spec.input_shapes) - {"input"}
    if extra:
        raise BenchError(f"{where}.input_shapes: zoo models have one input named 'input', not {sorted(extra)}")
    dims = tuple(spec.input_shapes.get("input", [BATCH, *arch.default_shape]))
    if len(dims) != 4 or dims[0] != BATCH or dims[1] != arch.default_shape[0] or any(d == BATCH for d in dims[1:]):
        raise BenchError(
            f"{where}.input_shapes.input: zoo models take [batch, {arch.default_shape[0]}, height, width], got {list(dims)}"
        )
    if any(d < 16 for d in dims[2:]):
        raise BenchError(f"{where}.input_shapes.input: height and width must be at least 16, got {list(dims)}")
    patch = arch.kwargs.get("patch")
    if patch and (dims[2] != dims[3] or dims[2] % patch):
        raise BenchError(f"{where}.input_shapes.input: {arch.name} takes square images whose side is a multiple of its "
                         f"patch size {patch}, got {dims[2]}x{dims[3]}")
    builder = spec.builder or "onnx"
    key = f"{arch.name}|{seed}|{dims[1:]}|opset{OPSET}|zoo{ZOO_VERSION}|{_builder_version(builder, where)}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    path = models_dir / f"{arch.name}_s{seed}_{dims[2]}x{dims[3]}_{digest}.onnx"
    return ModelInfo(spec.name, spec.source, (InputInfo("input", "float32", dims),), arch.task, path, arch.name, seed, OPSET,
                     builder=builder)


def _builder_version(builder: str, where: str) -> str:
    """What a zoo model's file depends on besides its architecture: PyTorch's version for its exporter."""
    import importlib.metadata as md
    import importlib.util

    if builder == "onnx":
        if importlib.util.find_spec("onnxruntime") is None:
            raise BenchError(f"{where}: zoo models are built with ONNX Runtime setting their batch-norm statistics, and it is "
                             "not installed here; pip install 'bench[ort]' (or onnxruntime-gpu)")
        return "onnx-builder"

    try:
        return f"torch{md.version('torch')}"
    except md.PackageNotFoundError:
        raise BenchError(f"{where}.builder: 'torch' exports the model with PyTorch, which is not installed here; "
                         "pip install 'bench[models]', or use builder: onnx (the default: the same model, no PyTorch)") from None


def _onnx_info(spec: ModelSpec, where: str, config_dir: Path | None, batch_sizes: list[int]) -> ModelInfo:
    import onnx
    from onnx import helper

    from bench.models.graph import opset_of, quantized_ops

    path = _resolve_path(spec.source, config_dir, where)
    try:
        onnx.checker.check_model(str(path))
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # onnx raises several types; all mean the same thing here
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BenchError(f"{where}.source: {path} is not a valid ONNX model: {first}") from None
    initializers = {i.name for i in model.graph.initializer}
    graph_inputs = [i for i in model.graph.input if i.name not in initializers]
    names = [i.name for i in graph_inputs]
    for key, what in (("input_shapes", spec.input_shapes), ("input_ranges", spec.input_ranges)):
        unknown = set(what) - set(names)
        if unknown:
            raise BenchError(f"{where}.{key}: {sorted(unknown)} not inputs of {path.name}; its inputs: {names}")
    declared = {inp.name: model_dims(inp) for inp in graph_inputs}
    named = {d for dims in declared.values() for d in dims if isinstance(d, str) and d != "?"}
    unknown_dims = set(spec.dims) - named
    if unknown_dims:
        raise BenchError(f"{where}.dims: {sorted(unknown_dims)} are not dynamic dimensions of {path.name}; "
                         f"its named dynamic dimensions: {sorted(named) or 'none'}")
    inputs = []
    for inp in graph_inputs:
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(inp.type.tensor_type.elem_type)).name
        dims = _input_dims(spec, inp.name, declared[inp.name], f"{where}", path, batch_sizes)
        rng = spec.input_ranges.get(inp.name)
        inputs.append(InputInfo(inp.name, dtype, tuple(dims), (float(rng[0]), float(rng[1])) if rng else None))
    return ModelInfo(spec.name, spec.source, tuple(inputs), "unknown", path, None, 0, opset_of(model) or None, quantized_ops(model))


def _input_dims(spec: ModelSpec, name: str, declared_dims: list[int | str], where: str, path: Path,
                batch_sizes: list[int]) -> list[int | str]:
    """An input's dimensions for the grid: given in input_shapes, or the model's own with named
    dynamic dims from `dims` and the leading dynamic axis as the batch; refused when a dynamic
    dimension stays unfixed or a fixed batch axis cannot take every batch size."""
    given = spec.input_shapes.get(name)
    if given is None:
        # Named dynamic dims take their value from `dims`; the leading axis, when still
        # dynamic, is the batch (the usual export); anything else left dynamic is an error.
        dims = [spec.dims.get(d, d) if isinstance(d, str) else d for d in declared_dims]
        if dims and not (isinstance(declared_dims[0], str) and declared_dims[0] in spec.dims):
            dims[0] = BATCH  # a fixed leading axis must then equal every batch size (checked below)
        loose = [f"{i}: {d!r}" for i, d in enumerate(dims) if isinstance(d, str) and d != BATCH]
        if loose:
            raise BenchError(
                f"{where}: input {name!r} of {path.name} has dynamic dimensions {dim_list(declared_dims)} "
                f"({', '.join(loose)} unfixed); fix them by position with input_shapes: "
                f"{{{name}: {dim_list(suggest(declared_dims))}}}" + (
                    f" or by name with dims: {{{', '.join(f'{d}: ...' for d in declared_dims[1:] if isinstance(d, str) and d != '?')}}}"
                    if any(isinstance(d, str) and d != "?" for d in declared_dims[1:]) else "")
            )
    else:
        dims = list(given)
        if len(dims) != len(declared_dims):
            raise BenchError(f"{where}.input_shapes.{name}: rank {len(dims)} given, the model's input has shape {dim_list(declared_dims)}")
        for i, (g, m) in enumerate(zip(dims, declared_dims)):
            if isinstance(m, int) and isinstance(g, int) and g != m:
                raise BenchError(f"{where}.input_shapes.{name}[{i}]: {g} given, the model fixes it at {m}")
    for d, m in zip(dims, declared_dims):
        if d == BATCH and isinstance(m, int) and any(b != m for b in batch_sizes):
            raise BenchError(
                f"{where}: input {name!r} of {path.name} has a fixed batch dimension {m}; "
                f"batch_sizes {batch_sizes} need a dynamic one (re-export with a dynamic axis 0)"
            )
    return dims


def model_dims(value_info: Any) -> list[int | str]:
    """An input's dimensions: ints where fixed; the dim_param name, or "?", where dynamic. Exporters
    write "dynamic" as a dim_param, as an empty dim, or as `dim_value: -1` (or 0): all are dynamic."""
    dims: list[int | str] = []
    for d in value_info.type.tensor_type.shape.dim:
        if d.HasField("dim_value") and d.dim_value > 0:
            dims.append(int(d.dim_value))
        else:
            dims.append(d.dim_param or "?")
    return dims


def dim_list(dims: Sequence[Any]) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"


def suggest(dims: Sequence[int | str]) -> list[int | str]:
    """A shape to paste into input_shapes: the leading dynamic axis as `batch`, other dynamic axes
    as a placeholder to replace (`224`, say, for height and width)."""
    out: list[int | str] = []
    for i, d in enumerate(dims):
        if isinstance(d, int):
            out.append(d)
        elif i == 0:
            out.append(BATCH)
        else:
            out.append(f"<{d}>" if d != "?" else "<size>")
    return out


def quantized_models(infos: dict[str, ModelInfo]) -> list[str]:
    """The models that arrive quantized: not converted again (Config.grid)."""
    return sorted(name for name, info in infos.items() if info.quantized)


def inspect_model(spec: ModelSpec, index: int, seed: int, batch_sizes: list[int], models_dir: Path, config_dir: Path | None = None) -> ModelInfo:
    where = f"models[{index}] ({spec.name})"
    if spec.is_zoo:
        return _zoo_info(spec, where, seed, models_dir)
    return _onnx_info(spec, where, config_dir, batch_sizes)


def export_zoo(info: ModelInfo) -> None:
    """Build the architecture with seeded weights and write it to info.path (atomically), by its builder."""
    import onnx

    info.path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(info.path.parent)
    # Named after this process: a worker killed mid-export (SIGKILL runs no `finally`) leaves a
    # file the next export recognizes as stale and removes.
    tmp = str(info.path.parent / f".{info.path.name}.{os.getpid()}.tmp")
    try:
        if info.builder == "torch":
            _torch_export(info, tmp)
        else:
            from bench.models.zoo import build_onnx

            onnx.save_model(build_onnx(info.arch, info.seed, info.inputs[0].shape(1)[1:]), tmp)
        onnx.checker.check_model(tmp)
        digest = file_sha256(Path(tmp))
        os.replace(tmp, info.path)
        _hash_file(info.path).write_text(digest + "\n")
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _torch_export(info: ModelInfo, tmp: str) -> None:
    import torch

    from bench.models.zoo import build

    shape = info.inputs[0].shape(1)
    model = build(info.arch, info.seed, shape[1:])
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        torch.onnx.export(model, (torch.zeros(*shape),), tmp, input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}}, opset_version=OPSET,
                          do_constant_folding=True, dynamo=False)


def _hash_file(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def zoo_export_ok(path: Path) -> bool:
    """A zoo export is used only when it matches the hash recorded beside it at export; a file
    truncated or overwritten since (or exported before hashes were kept) is exported again."""
    side = _hash_file(path)
    try:
        return path.is_file() and side.read_text().strip() == file_sha256(path)
    except OSError:
        return False


def _remove_stale_temps(directory: Path) -> None:
    """Temporary exports (.<name>.<pid>.tmp) whose process is gone."""
    for tmp in directory.glob(".*.tmp"):
        try:
            pid = int(tmp.name.rsplit(".", 2)[-2])
        except (ValueError, IndexError):
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)
        except PermissionError:
            pass


def materialize(info: ModelInfo) -> PreparedModel:
    """Make sure the ONNX file exists (exporting a zoo model unless cached) and describe it."""
    import onnx

    if info.arch is not None and not zoo_export_ok(info.path):
        export_zoo(info)
    model = onnx.load(str(info.path), load_external_data=False)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    sha = model_sha256(info.path)
    return PreparedModel(info, info.path, sha, opset, tuple(o.name for o in model.graph.output), source_sha256=sha)


def for_cell(model: PreparedModel, batch: int, cache: ArtifactCache, keep_batch_dynamic: bool = False) -> PreparedModel:
    """The model a backend gets for a cell: frozen to the cell's shapes and constant-folded (see
    bench.models.freeze), with the batch axis left dynamic for a backend that builds one engine
    for every batch size. Its facts carry `gflop`, counted on the fully static graph."""
    from bench.models.freeze import prepare

    static_shapes = model.info.shapes(batch)
    path, hit, facts = prepare(model.path, model.source_sha256, static_shapes, cache)
    if keep_batch_dynamic:
        dynamic = {i.name: [BATCH if d == BATCH else int(d) for d in i.dims] for i in model.info.inputs}
        path, hit, dyn_facts = prepare(model.path, model.source_sha256, dynamic, cache)
        facts = {**dyn_facts, "gflop": facts.get("gflop")}
    # the original file when preparation fell back: its hash covers its external weights too
    sha = model.source_sha256 if path == model.path else model_sha256(path)  # external data (over 1 GB) included
    return replace(model, path=path, sha256=sha, facts={**facts, "prepared_cache_hit": hit})
