"""From a config's model entry to an ONNX file on disk with known, fixable input shapes.

`inspect_model` is cheap and runs before a sweep starts, so a missing file, a corrupt model or an
unfixed dynamic dimension is a clear error with nothing written. `materialize` does the expensive
part (exporting a zoo model, cached under models/) inside the sweep.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.cache import file_sha256
from bench.config import BATCH, ModelSpec
from bench.errors import BenchError
from bench.models.zoo import ARCHITECTURES, ZOO_VERSION

OPSET = 17


@dataclass(frozen=True)
class InputInfo:
    name: str
    dtype: str  # numpy dtype name
    dims: tuple  # ints and "batch"

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

    def shapes(self, batch: int) -> dict[str, tuple[int, ...]]:
        return {i.name: i.shape(batch) for i in self.inputs}

    def to_dict(self) -> dict:
        """JSON-ready, for handing to a worker process."""
        return {"name": self.name, "source": self.source, "task": self.task, "path": str(self.path),
                "arch": self.arch, "seed": self.seed, "opset": self.opset,
                "inputs": [{"name": i.name, "dtype": i.dtype, "dims": list(i.dims)} for i in self.inputs]}

    @classmethod
    def from_dict(cls, d: dict) -> "ModelInfo":
        inputs = tuple(InputInfo(i["name"], i["dtype"], tuple(i["dims"])) for i in d["inputs"])
        return cls(d["name"], d["source"], inputs, d["task"], Path(d["path"]), d["arch"], d["seed"], d["opset"])


@dataclass(frozen=True)
class PreparedModel:
    info: ModelInfo
    path: Path
    sha256: str
    opset: int
    outputs: tuple[str, ...] = field(default_factory=tuple)

    @property
    def name(self) -> str:
        return self.info.name


def _resolve_path(source: str, config_dir: Path | None) -> Path:
    p = Path(source).expanduser()
    candidates = [p] if p.is_absolute() else [Path.cwd() / p] + ([config_dir / p] if config_dir else [])
    for c in candidates:
        if c.is_file():
            return c.resolve()
    raise BenchError(f"model file {source!r} not found (looked at: {', '.join(str(c) for c in candidates)})")


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
    import importlib.metadata as md

    try:
        torch_version = md.version("torch")
    except md.PackageNotFoundError:
        torch_version = "none"
    key = f"{arch.name}|{seed}|{dims[1:]}|opset{OPSET}|zoo{ZOO_VERSION}|torch{torch_version}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    path = models_dir / f"{arch.name}_s{seed}_{dims[2]}x{dims[3]}_{digest}.onnx"
    return ModelInfo(spec.name, spec.source, (InputInfo("input", "float32", dims),), arch.task, path, arch.name, seed, OPSET)


def _onnx_info(spec: ModelSpec, where: str, config_dir: Path | None, batch_sizes: list[int]) -> ModelInfo:
    import onnx
    from onnx import helper

    path = _resolve_path(spec.source, config_dir)
    try:
        onnx.checker.check_model(str(path))
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # onnx raises several types; all mean the same thing here
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BenchError(f"{where}.source: {path} is not a valid ONNX model: {first}") from None
    initializers = {i.name for i in model.graph.initializer}
    graph_inputs = [i for i in model.graph.input if i.name not in initializers]
    names = [i.name for i in graph_inputs]
    unknown = set(spec.input_shapes) - set(names)
    if unknown:
        raise BenchError(f"{where}.input_shapes: {sorted(unknown)} not inputs of {path.name}; its inputs: {names}")
    inputs = []
    for inp in graph_inputs:
        ttype = inp.type.tensor_type
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(ttype.elem_type)).name
        model_dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in ttype.shape.dim]
        given = spec.input_shapes.get(inp.name)
        if given is None:
            # The usual export: the leading axis is the batch, and the only dynamic one.
            dims = [BATCH if i == 0 else d for i, d in enumerate(model_dims)]
            loose = [i for i, d in enumerate(dims) if not isinstance(d, int) and d != BATCH]
            if loose:
                raise BenchError(
                    f"{where}: input {inp.name!r} of {path.name} has dynamic dimensions {model_dims}; "
                    f"fix them with input_shapes: {{{inp.name}: [batch, ...]}}"
                )
        else:
            dims = list(given)
            if len(dims) != len(model_dims):
                raise BenchError(f"{where}.input_shapes.{inp.name}: rank {len(dims)} given, the model's input has shape {model_dims}")
            for i, (g, m) in enumerate(zip(dims, model_dims)):
                if isinstance(m, int) and isinstance(g, int) and g != m:
                    raise BenchError(f"{where}.input_shapes.{inp.name}[{i}]: {g} given, the model fixes it at {m}")
        for i, (d, m) in enumerate(zip(dims, model_dims)):
            if d == BATCH and isinstance(m, int) and any(b != m for b in batch_sizes):
                raise BenchError(
                    f"{where}: input {inp.name!r} of {path.name} has a fixed batch dimension {m}; "
                    f"batch_sizes {batch_sizes} need a dynamic one (re-export with a dynamic axis 0)"
                )
        inputs.append(InputInfo(inp.name, dtype, tuple(dims)))
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    return ModelInfo(spec.name, spec.source, tuple(inputs), "unknown", path, None, 0, opset)


def inspect_model(spec: ModelSpec, index: int, seed: int, batch_sizes: list[int], models_dir: Path, config_dir: Path | None = None) -> ModelInfo:
    where = f"models[{index}] ({spec.name})"
    if spec.is_zoo:
        return _zoo_info(spec, where, seed, models_dir)
    return _onnx_info(spec, where, config_dir, batch_sizes)


def export_zoo(info: ModelInfo) -> None:
    """Build the architecture with seeded weights and export it to info.path (atomically)."""
    import onnx
    import torch

    from bench.models.zoo import build

    shape = info.inputs[0].shape(1)
    model = build(info.arch, info.seed, shape[1:])
    info.path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".onnx.tmp", dir=info.path.parent)
    os.close(fd)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
            torch.onnx.export(
                model,
                (torch.zeros(*shape),),
                tmp,
                input_names=["input"],
                output_names=["output"],
                dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                opset_version=OPSET,
                do_constant_folding=True,
                dynamo=False,
            )
        onnx.checker.check_model(tmp)
        os.replace(tmp, info.path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def materialize(info: ModelInfo) -> PreparedModel:
    """Make sure the ONNX file exists (exporting a zoo model unless cached) and describe it."""
    import onnx

    if info.arch is not None and not info.path.is_file():
        export_zoo(info)
    model = onnx.load(str(info.path), load_external_data=False)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    return PreparedModel(info, info.path, file_sha256(info.path), opset, tuple(o.name for o in model.graph.output))
