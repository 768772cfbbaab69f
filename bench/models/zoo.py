"""The model zoo: classic vision architectures written from their papers, built with seeded weights.

No hub is needed. Each entry is a builder plus a default input size; `-tiny` variants keep the
structure (same block types, same operators) with few channels, for fast tests.

Two routes build the same model (the same weights, bench.models.weights, and the same operators):
"onnx" (the default) writes the graph directly with numpy (bench.models.onnx_zoo) and needs no
PyTorch; "torch" builds the PyTorch module (bench.models.torch_zoo) and exports it with
torch.onnx, for those who want the graph PyTorch's exporter writes. torch is imported only then.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Architecture:
    name: str
    builder: str  # a function in bench.models.torch_zoo and in bench.models.onnx_zoo.BUILDERS
    kwargs: dict[str, Any]
    default_shape: tuple[int, int, int]  # C, H, W
    task: str  # "classification" or "segmentation"


def _arch(name: str, builder: str, shape=(3, 224, 224), task="classification", **kwargs) -> Architecture:
    return Architecture(name, builder, kwargs, shape, task)


ARCHITECTURES: dict[str, Architecture] = {
    a.name: a
    for a in [
        _arch("resnet18", "resnet", block="basic", layers=(2, 2, 2, 2)),
        _arch("resnet50", "resnet", block="bottleneck", layers=(3, 4, 6, 3)),
        _arch("googlenet", "googlenet"),
        _arch("mobilenet_v2", "mobilenet_v2"),
        _arch("densenet121", "densenet", growth=32, blocks=(6, 12, 24, 16), init_features=64),
        _arch("unet", "unet", shape=(3, 256, 256), task="segmentation", base=64, num_classes=2),
        _arch("efficientnet_b0", "efficientnet"),
        _arch("vit_s16", "vit", image=224, patch=16),
        # Tiny variants: same block types and operators, a fraction of the channels and depth.
        _arch("resnet18-tiny", "resnet", shape=(3, 32, 32), block="basic", layers=(1, 1, 1, 1), width=8, num_classes=10),
        _arch("resnet50-tiny", "resnet", shape=(3, 32, 32), block="bottleneck", layers=(1, 1, 1, 1), width=8, num_classes=10),
        _arch("googlenet-tiny", "googlenet", shape=(3, 32, 32), width_div=16, num_classes=10),
        _arch("mobilenet_v2-tiny", "mobilenet_v2", shape=(3, 32, 32), width_mult=0.25, num_classes=10),
        _arch("densenet121-tiny", "densenet", shape=(3, 32, 32), growth=4, blocks=(2, 2, 2, 2), init_features=8, num_classes=10),
        _arch("unet-tiny", "unet", shape=(3, 32, 32), task="segmentation", base=4, num_classes=2),
        _arch("efficientnet_b0-tiny", "efficientnet", shape=(3, 32, 32), width_mult=0.25, max_repeats=1, num_classes=10),
        _arch("vit_s16-tiny", "vit", shape=(3, 32, 32), image=32, patch=8, dim=32, depth=2, heads=2, mlp=64, num_classes=10),
    ]
}


# Bump when an architecture's definition changes: it is part of every cached model's key.
# 2: weights drawn with numpy (bench.models.weights), shared by both routes.
ZOO_VERSION = 2


def _kwargs(spec: Architecture, chw: tuple[int, int, int]) -> dict[str, Any]:
    return {**spec.kwargs, "image": chw[1]} if "patch" in spec.kwargs else spec.kwargs  # a ViT's position table


def build(arch: str, seed: int, chw: tuple[int, int, int]) -> Any:
    """The torch module for `arch`, in eval mode, with weights drawn from `seed`."""
    import torch

    from bench.models import torch_zoo

    spec = ARCHITECTURES[arch]
    fn: Callable[..., Any] = getattr(torch_zoo, spec.builder)
    model = fn(**_kwargs(spec, chw))
    torch_zoo.load_weights(model, seed)
    torch_zoo.calibrate_batchnorm(model, chw, seed)
    return model


def build_onnx(arch: str, seed: int, chw: tuple[int, int, int]) -> Any:
    """The same model as `build` exports, as an onnx.ModelProto written without PyTorch."""
    from bench.models import onnx_zoo

    spec = ARCHITECTURES[arch]
    return onnx_zoo.build(spec.builder, _kwargs(spec, chw), seed, chw)
