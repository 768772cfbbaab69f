"""PyTorch definitions of the zoo's architectures, following the original papers.

ResNet (He et al. 2015, basic and bottleneck blocks), GoogLeNet (Szegedy et al. 2014, with batch norm),
MobileNetV2 (Sandler et al. 2018, inverted residuals), DenseNet (Huang et al. 2016), U-Net
(Ronneberger et al. 2015), EfficientNet (Tan and Le 2019: MBConv with SiLU and squeeze-and-excitation)
and the Vision Transformer (Dosovitskiy et al. 2020: patch embedding, pre-norm encoder blocks of
multi-head self-attention and a GELU MLP). Imported only when a model is built: it needs torch.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from bench.models import weights
from bench.models.blocks import EFFICIENTNET_B0, INCEPTION, MOBILENET_V2, divisible


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: type[nn.Module] | None = nn.ReLU) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act is not None:
        layers.append(act(inplace=True))
    return nn.Sequential(*layers)


# --- ResNet ---------------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(_conv_bn(cin, planes, 3, stride), _conv_bn(planes, planes, 3, act=None))
        self.shortcut = _shortcut(cin, planes * self.expansion, stride)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.body(x) + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            _conv_bn(cin, planes, 1),
            _conv_bn(planes, planes, 3, stride),
            _conv_bn(planes, planes * self.expansion, 1, act=None),
        )
        self.shortcut = _shortcut(cin, planes * self.expansion, stride)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.body(x) + self.shortcut(x))


def _shortcut(cin: int, cout: int, stride: int) -> nn.Module:
    if stride == 1 and cin == cout:
        return nn.Identity()
    return _conv_bn(cin, cout, 1, stride, act=None)


def resnet(block: str, layers: tuple[int, ...], width: int = 64, num_classes: int = 1000) -> nn.Module:
    cls = {"basic": BasicBlock, "bottleneck": Bottleneck}[block]
    stages: list[nn.Module] = [_conv_bn(3, width, 7, 2), nn.MaxPool2d(3, 2, 1)]
    cin = width
    for i, n in enumerate(layers):
        planes = width * 2**i
        for j in range(n):
            stages.append(cls(cin, planes, 2 if (j == 0 and i > 0) else 1))
            cin = planes * cls.expansion
    return nn.Sequential(*stages, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes))


# --- GoogLeNet ------------------------------------------------------------------------------------


class Inception(nn.Module):
    def __init__(self, cin: int, c1: int, r3: int, c3: int, r5: int, c5: int, pool: int):
        super().__init__()
        self.b1 = _conv_bn(cin, c1, 1)
        self.b2 = nn.Sequential(_conv_bn(cin, r3, 1), _conv_bn(r3, c3, 3))
        self.b3 = nn.Sequential(_conv_bn(cin, r5, 1), _conv_bn(r5, c5, 5))
        self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, 1), _conv_bn(cin, pool, 1))
        self.cout = c1 + c3 + c5 + pool

    def forward(self, x):
        return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1)


def googlenet(width_div: int = 1, num_classes: int = 1000) -> nn.Module:
    def w(c: int) -> int:
        return max(1, c // width_div)

    layers: list[nn.Module] = [
        _conv_bn(3, w(64), 7, 2), nn.MaxPool2d(3, 2, 1),
        _conv_bn(w(64), w(64), 1), _conv_bn(w(64), w(192), 3), nn.MaxPool2d(3, 2, 1),
    ]
    cin = w(192)
    for name, chans in INCEPTION.items():
        block = Inception(cin, *(w(c) for c in chans))
        layers.append(block)
        cin = block.cout
        if name in ("3b", "4e"):
            layers.append(nn.MaxPool2d(3, 2, 1))
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.4), nn.Linear(cin, num_classes))


# --- MobileNetV2 ----------------------------------------------------------------------------------


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = [] if expand == 1 else [_conv_bn(cin, hidden, 1, act=nn.ReLU6)]
        layers += [_conv_bn(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6), _conv_bn(hidden, cout, 1, act=None)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


def mobilenet_v2(width_mult: float = 1.0, num_classes: int = 1000) -> nn.Module:
    cin = divisible(32 * width_mult)
    last = divisible(1280 * width_mult) if width_mult < 1 else 1280
    layers: list[nn.Module] = [_conv_bn(3, cin, 3, 2, act=nn.ReLU6)]
    for t, c, n, s in MOBILENET_V2:
        cout = divisible(c * width_mult)
        for i in range(n):
            layers.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
            cin = cout
    layers.append(_conv_bn(cin, last, 1, act=nn.ReLU6))
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(last, num_classes))


# --- DenseNet -------------------------------------------------------------------------------------


class DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int, bn_size: int = 4):
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(cin), nn.ReLU(inplace=True), nn.Conv2d(cin, bn_size * growth, 1, bias=False),
            nn.BatchNorm2d(bn_size * growth), nn.ReLU(inplace=True), nn.Conv2d(bn_size * growth, growth, 3, 1, 1, bias=False),
        )

    def forward(self, x):
        return torch.cat([x, self.body(x)], 1)


def densenet(growth: int, blocks: tuple[int, ...], init_features: int, num_classes: int = 1000) -> nn.Module:
    layers: list[nn.Module] = [_conv_bn(3, init_features, 7, 2), nn.MaxPool2d(3, 2, 1)]
    c = init_features
    for i, n in enumerate(blocks):
        for _ in range(n):
            layers.append(DenseLayer(c, growth))
            c += growth
        if i != len(blocks) - 1:
            layers += [nn.BatchNorm2d(c), nn.ReLU(inplace=True), nn.Conv2d(c, c // 2, 1, bias=False), nn.AvgPool2d(2, 2)]
            c //= 2
    layers += [nn.BatchNorm2d(c), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes)]
    return nn.Sequential(*layers)


# --- U-Net ----------------------------------------------------------------------------------------


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(_conv_bn(cin, cout, 3), _conv_bn(cout, cout, 3))


class UNet(nn.Module):
    def __init__(self, base: int = 64, num_classes: int = 2, depth: int = 4):
        super().__init__()
        chans = [base * 2**i for i in range(depth + 1)]
        self.inc = _double_conv(3, chans[0])
        self.downs = nn.ModuleList(nn.Sequential(nn.MaxPool2d(2), _double_conv(chans[i], chans[i + 1])) for i in range(depth))
        self.ups = nn.ModuleList(nn.ConvTranspose2d(chans[i + 1], chans[i], 2, 2) for i in reversed(range(depth)))
        self.up_convs = nn.ModuleList(_double_conv(chans[i] * 2, chans[i]) for i in reversed(range(depth)))
        self.head = nn.Conv2d(chans[0], num_classes, 1)

    def forward(self, x):
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        x = skips.pop()
        for up, conv in zip(self.ups, self.up_convs):
            x = conv(torch.cat([skips.pop(), up(x)], 1))
        return self.head(x)


def unet(base: int = 64, num_classes: int = 2) -> nn.Module:
    return UNet(base, num_classes)


# --- EfficientNet ---------------------------------------------------------------------------------


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, squeezed: int):
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeezed, 1)
        self.expand = nn.Conv2d(squeezed, channels, 1)

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.expand(nn.functional.silu(self.reduce(s))))


class MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = [] if expand == 1 else [_conv_bn(cin, hidden, 1, act=nn.SiLU)]
        layers += [_conv_bn(hidden, hidden, k, stride, groups=hidden, act=nn.SiLU), SqueezeExcite(hidden, max(1, cin // 4)),
                   _conv_bn(hidden, cout, 1, act=None)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


def efficientnet(width_mult: float = 1.0, max_repeats: int = 4, num_classes: int = 1000) -> nn.Module:
    cin = divisible(32 * width_mult)
    layers: list[nn.Module] = [_conv_bn(3, cin, 3, 2, act=nn.SiLU)]
    for t, c, n, s, k in EFFICIENTNET_B0:
        cout = divisible(c * width_mult)
        for i in range(min(n, max_repeats)):
            layers.append(MBConv(cin, cout, k, s if i == 0 else 1, t))
            cin = cout
    head = divisible(1280 * width_mult)
    layers.append(_conv_bn(cin, head, 1, act=nn.SiLU))
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(head, num_classes))


# --- Vision Transformer ---------------------------------------------------------------------------


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn = torch.softmax((q @ k.transpose(-2, -1)) * self.scale, dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, d))


class EncoderBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp: int):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim, eps=1e-6), Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp), nn.GELU(), nn.Linear(mlp, dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    def __init__(self, image: int, patch: int, dim: int, depth: int, heads: int, mlp: int, num_classes: int):
        super().__init__()
        self.embed = nn.Conv2d(3, dim, patch, patch)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, (image // patch) ** 2 + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*[EncoderBlock(dim, heads, mlp) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        x = self.embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        return self.head(self.norm(self.blocks(x))[:, 0])


def vit(image: int = 224, patch: int = 16, dim: int = 384, depth: int = 12, heads: int = 6, mlp: int = 1536,
        num_classes: int = 1000) -> nn.Module:
    """ViT-S/16 by default (22M parameters); the position embedding fixes the image size."""
    return VisionTransformer(image, patch, dim, depth, heads, mlp, num_classes)


@torch.no_grad()
def load_weights(model: nn.Module, seed: int) -> None:
    """Parameter k, in registration order, from bench.models.weights.draw: the draws the ONNX builder makes."""
    for index, (name, p) in enumerate(model.named_parameters()):
        owner_name, _, leaf = name.rpartition(".")
        owner = model.get_submodule(owner_name)
        fan_in = None
        if isinstance(owner, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm)):
            kind = "ones" if leaf == "weight" else "zeros"
        elif leaf in ("weight", "bias") and isinstance(getattr(owner, "weight", None), torch.Tensor):
            kind, fan_in = leaf, math.prod(owner.weight.shape[1:])
        else:
            kind = "normal"  # a free parameter: a ViT's class token and position table
        p.copy_(torch.from_numpy(weights.draw(seed, index, tuple(p.shape), kind, fan_in)))


@torch.no_grad()
def calibrate_batchnorm(model: nn.Module, chw: tuple[int, int, int], seed: int) -> None:
    """Set batch-norm running statistics from one seeded random batch (bench.models.weights.calibration_batch).

    With untrained weights and the default statistics (mean 0, var 1), activations grow or vanish
    layer after layer and logits reach magnitudes where absolute tolerances mean nothing. Estimating
    the statistics once, as training would, keeps every layer near unit scale, like a trained model.
    """
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration pass
    model.train()
    model(torch.from_numpy(np.ascontiguousarray(weights.calibration_batch(seed, chw))))
    model.eval()
