"""The zoo's architectures written directly as ONNX graphs, with numpy: the route that needs no PyTorch.

Each builder mirrors its PyTorch definition in bench.models.torch_zoo layer for layer: layers are
declared in the order PyTorch registers them (so parameter k is the same draw, bench.models.weights)
and applied in the order its forward runs. The graph is what PyTorch's TorchScript exporter writes for
that module in eval mode: batch norm after a convolution folded into it, a free batch norm (DenseNet's
pre-activation) as BatchNormalization, ReLU6 as Clip, SiLU as Sigmoid and Mul, GELU with Erf, a
classifier as Gemm. tests/test_zoo_routes.py checks that both routes compute the same outputs with the
same operators, where PyTorch is installed.

Batch-norm statistics are set as PyTorch's zoo sets them (torch_zoo.calibrate_batchnorm): from one
seeded batch run in training mode, each norm normalizing with its batch's own statistics. Here that
pass is the same graph with each norm written out as batch statistics, run once in ONNX Runtime.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Callable, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from bench.models import weights
from bench.models.blocks import EFFICIENTNET_B0, INCEPTION, MOBILENET_V2, OPSET, divisible

IR_VERSION = 8  # what PyTorch's exporter writes at opset 17
Layer = Callable[[str], str]  # a tensor name in, a tensor name out


class Net:
    """One architecture's graph under construction. Factory methods (conv, conv_bn, bn, linear,
    layer_norm, pools) draw their parameters when called and return a Layer; the rest add nodes.
    With `stats` None every batch norm uses its batch's statistics and reports them (calibration);
    otherwise stats[k] holds norm k's (mean, running variance). `drawn`: parameters an earlier pass
    over the same architecture drew (the same draws, in the same order), taken instead of drawing again."""

    def __init__(self, seed: int, stats: dict[int, tuple[np.ndarray, np.ndarray]] | None, drawn: list[np.ndarray] | None = None):
        self.seed, self.stats = seed, stats
        self.drawn: list[np.ndarray] = drawn if drawn is not None else []
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.stat_outputs: list[tuple[int, str, str, str]] = []  # norm index, mean, variance, input shape
        self._params = 0
        self._norms = 0
        self._count: Counter[str] = Counter()
        self._consts: dict[tuple, str] = {}

    @property
    def calibrating(self) -> bool:
        return self.stats is None

    # --- plumbing -------------------------------------------------------------------------------

    def param(self, shape: tuple[int, ...], kind: str, fan_in: int | None = None) -> np.ndarray:
        if self._params == len(self.drawn):
            self.drawn.append(weights.draw(self.seed, self._params, tuple(shape), kind, fan_in))
        self._params += 1
        return self.drawn[self._params - 1]

    def tensor(self, arr: np.ndarray, hint: str = "const") -> str:
        """An initializer; small constants (scalars, shapes) are shared."""
        key = (arr.dtype.str, arr.shape, arr.tobytes()) if arr.size <= 8 else None
        if key is not None and key in self._consts:
            return self._consts[key]
        self._count[hint] += 1
        name = f"{hint}_{self._count[hint]}"
        self.inits.append(numpy_helper.from_array(arr, name))
        if key is not None:
            self._consts[key] = name
        return name

    def scalar(self, value: float) -> str:
        return self.tensor(np.array(value, np.float32), "scalar")

    def ints(self, *values: int) -> str:
        return self.tensor(np.array(values, np.int64), "shape")

    def op(self, op_type: str, inputs: Sequence[str], **attrs: Any) -> str:
        return self.ops(op_type, inputs, 1, **attrs)[0]

    def ops(self, op_type: str, inputs: Sequence[str], outputs: int, **attrs: Any) -> list[str]:
        self._count[op_type] += 1
        name = f"/{op_type}_{self._count[op_type]}"
        names = [f"{name}_output_{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names, name=name, **attrs))
        return names

    # --- layers with parameters ------------------------------------------------------------------

    def conv(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, bias: bool = False,
             pad: int | None = None) -> Layer:
        w = self.param((cout, cin // groups, k, k), "weight")
        b = self.param((cout,), "bias", math.prod(w.shape[1:])) if bias else None
        return lambda x: self._conv(x, w, b, stride, k // 2 if pad is None else pad, groups)

    def _conv(self, x: str, w: np.ndarray, b: np.ndarray | None, stride: int, pad: int, groups: int) -> str:
        ins = [x, self.tensor(w, "weight")] + ([self.tensor(b, "bias")] if b is not None else [])
        k = w.shape[2]
        return self.op("Conv", ins, dilations=[1, 1], group=groups, kernel_shape=[k, k], pads=[pad] * 4, strides=[stride] * 2)

    def conv_bn(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: str | None = "relu") -> Layer:
        """Convolution without bias, batch norm, activation: folded into one Conv, as PyTorch exports it."""
        w = self.param((cout, cin // groups, k, k), "weight")
        norm = self._norm(cout)

        def apply(x: str) -> str:
            if self.calibrating:
                y = norm.batch_stats(self._conv(x, w, None, stride, k // 2, groups))
            else:
                scale, shift = norm.folded()
                y = self._conv(x, (w * scale[:, None, None, None]).astype(np.float32), shift, stride, k // 2, groups)
            return self.act(y, act)
        return apply

    def bn(self, c: int) -> Layer:
        norm = self._norm(c)
        return lambda x: norm.batch_stats(x) if self.calibrating else norm.node(x)

    def _norm(self, c: int) -> "_BatchNorm":
        norm = _BatchNorm(self, self._norms, self.param((c,), "ones"), self.param((c,), "zeros"))
        self._norms += 1
        return norm

    def conv_transpose(self, cin: int, cout: int, k: int, stride: int) -> Layer:
        w = self.param((cin, cout, k, k), "weight")
        b = self.param((cout,), "bias", math.prod(w.shape[1:]))
        return lambda x: self.op("ConvTranspose", [x, self.tensor(w, "weight"), self.tensor(b, "bias")], dilations=[1, 1],
                                 group=1, kernel_shape=[k, k], output_padding=[0, 0], pads=[0] * 4, strides=[stride] * 2)

    def linear(self, cin: int, cout: int, tokens: bool = False) -> Layer:
        """Gemm on (batch, features); MatMul and Add on (batch, tokens, features), as PyTorch exports each."""
        w = self.param((cout, cin), "weight")
        b = self.param((cout,), "bias", cin)
        if tokens:
            return lambda x: self.op("Add", [self.op("MatMul", [x, self.tensor(np.ascontiguousarray(w.T), "weight")]),
                                             self.tensor(b, "bias")])
        return lambda x: self.op("Gemm", [x, self.tensor(w, "weight"), self.tensor(b, "bias")], alpha=1.0, beta=1.0, transB=1)

    def layer_norm(self, dim: int, eps: float = 1e-6) -> Layer:
        scale, shift = self.param((dim,), "ones"), self.param((dim,), "zeros")
        return lambda x: self.op("LayerNormalization", [x, self.tensor(scale, "ln_scale"), self.tensor(shift, "ln_bias")],
                                 axis=-1, epsilon=eps)

    def max_pool(self, k: int, stride: int, pad: int = 0) -> Layer:
        return lambda x: self.op("MaxPool", [x], ceil_mode=0, dilations=[1, 1], kernel_shape=[k, k], pads=[pad] * 4,
                                 strides=[stride] * 2)

    def avg_pool(self, k: int, stride: int) -> Layer:
        return lambda x: self.op("AveragePool", [x], ceil_mode=0, count_include_pad=0, kernel_shape=[k, k], pads=[0] * 4,
                                 strides=[stride] * 2)

    # --- operators ----------------------------------------------------------------------------------

    def act(self, x: str, kind: str | None) -> str:
        if kind is None:
            return x
        if kind == "relu":
            return self.op("Relu", [x])
        if kind == "relu6":
            return self.op("Clip", [x, self.scalar(0.0), self.scalar(6.0)])
        if kind == "silu":
            return self.op("Mul", [x, self.op("Sigmoid", [x])])
        raise ValueError(f"unknown activation {kind!r}")

    def gelu(self, x: str) -> str:
        """The exact GELU, 0.5 x (1 + erf(x / sqrt 2)), as PyTorch exports nn.GELU()."""
        erf = self.op("Erf", [self.op("Div", [x, self.scalar(math.sqrt(2.0))])])
        return self.op("Mul", [self.op("Mul", [x, self.op("Add", [erf, self.scalar(1.0)])]), self.scalar(0.5)])

    def add(self, a: str, b: str) -> str:
        return self.op("Add", [a, b])

    def concat(self, xs: Sequence[str], axis: int = 1) -> str:
        return self.op("Concat", list(xs), axis=axis)

    def pooled(self, x: str) -> str:
        """AdaptiveAvgPool2d(1) then Flatten."""
        return self.op("Flatten", [self.op("GlobalAveragePool", [x])], axis=1)

    # --- the model ----------------------------------------------------------------------------------

    def model(self, output: str, outputs: Sequence[str] = (), batch: int | str = "batch",
              chw: tuple[int, int, int] = (3, 224, 224)) -> onnx.ModelProto:
        """The graph with `output` renamed "output" (and `outputs` kept as they are)."""
        nodes = [helper.make_node(n.op_type, n.input, ["output" if o == output else o for o in n.output], name=n.name)
                 for n in self.nodes]
        for n, src in zip(nodes, self.nodes):
            n.attribute.extend(src.attribute)
        graph = helper.make_graph(nodes, "zoo", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, *chw])],
                                  [helper.make_empty_tensor_value_info(o) for o in ("output", *outputs)], self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="bench.models.onnx_zoo")
        model.ir_version = IR_VERSION
        inferred = onnx.shape_inference.infer_shapes(model)
        del model.graph.output[:]
        model.graph.output.extend(inferred.graph.output)
        lead = model.graph.output[0].type.tensor_type.shape.dim[0]  # unnamed where a shape was computed (a ViT's class token)
        if isinstance(batch, str):
            lead.dim_param = batch
        return model


class _BatchNorm:
    def __init__(self, net: Net, index: int, gamma: np.ndarray, beta: np.ndarray):
        self.net, self.index, self.gamma, self.beta = net, index, gamma, beta

    def batch_stats(self, x: str) -> str:
        """Normalize with this batch's mean and (biased) variance over N, H, W, and report both."""
        net, c = self.net, self.gamma.size
        mean = net.op("ReduceMean", [x], axes=[0, 2, 3], keepdims=1)
        centered = net.op("Sub", [x, mean])
        var = net.op("ReduceMean", [net.op("Mul", [centered, centered])], axes=[0, 2, 3], keepdims=1)
        y = net.op("Div", [centered, net.op("Sqrt", [net.op("Add", [var, net.scalar(weights.BN_EPS)])])])
        y = net.op("Mul", [y, net.tensor(self.gamma.reshape(1, c, 1, 1), "gamma")])
        net.stat_outputs.append((self.index, mean, var, net.op("Shape", [x])))
        return net.op("Add", [y, net.tensor(self.beta.reshape(1, c, 1, 1), "beta")])

    def folded(self) -> tuple[np.ndarray, np.ndarray]:
        """(scale, shift) with which a convolution absorbs this norm."""
        mean, var = self.net.stats[self.index]
        scale = self.gamma / np.sqrt(var + weights.BN_EPS)
        return scale.astype(np.float32), (self.beta - mean * scale).astype(np.float32)

    def node(self, x: str) -> str:
        mean, var = self.net.stats[self.index]
        net = self.net
        ins = [x, net.tensor(self.gamma, "bn_scale"), net.tensor(self.beta, "bn_bias"),
               net.tensor(mean.astype(np.float32), "bn_mean"), net.tensor(var.astype(np.float32), "bn_var")]
        return net.op("BatchNormalization", ins, epsilon=weights.BN_EPS, momentum=0.9)


def seq(*layers: Layer) -> Layer:
    def apply(x: str) -> str:
        for layer in layers:
            x = layer(x)
        return x
    return apply


# --- ResNet ---------------------------------------------------------------------------------------


def _shortcut(net: Net, cin: int, cout: int, stride: int) -> Layer:
    if stride == 1 and cin == cout:
        return lambda x: x
    return net.conv_bn(cin, cout, 1, stride, act=None)


def _basic(net: Net, cin: int, planes: int, stride: int) -> tuple[Layer, int]:
    body = seq(net.conv_bn(cin, planes, 3, stride), net.conv_bn(planes, planes, 3, act=None))
    shortcut = _shortcut(net, cin, planes, stride)
    return lambda x: net.act(net.add(body(x), shortcut(x)), "relu"), planes


def _bottleneck(net: Net, cin: int, planes: int, stride: int) -> tuple[Layer, int]:
    body = seq(net.conv_bn(cin, planes, 1), net.conv_bn(planes, planes, 3, stride), net.conv_bn(planes, planes * 4, 1, act=None))
    shortcut = _shortcut(net, cin, planes * 4, stride)
    return lambda x: net.act(net.add(body(x), shortcut(x)), "relu"), planes * 4


def resnet(net: Net, block: str, layers: tuple[int, ...], width: int = 64, num_classes: int = 1000) -> Layer:
    make = {"basic": _basic, "bottleneck": _bottleneck}[block]
    stages: list[Layer] = [net.conv_bn(3, width, 7, 2), net.max_pool(3, 2, 1)]
    cin = width
    for i, n in enumerate(layers):
        for j in range(n):
            stage, cin = make(net, cin, width * 2**i, 2 if (j == 0 and i > 0) else 1)
            stages.append(stage)
    fc = net.linear(cin, num_classes)
    return seq(*stages, net.pooled, fc)


# --- GoogLeNet ------------------------------------------------------------------------------------


def _inception(net: Net, cin: int, c1: int, r3: int, c3: int, r5: int, c5: int, pool: int) -> Layer:
    branches = [net.conv_bn(cin, c1, 1), seq(net.conv_bn(cin, r3, 1), net.conv_bn(r3, c3, 3)),
                seq(net.conv_bn(cin, r5, 1), net.conv_bn(r5, c5, 5)), seq(net.max_pool(3, 1, 1), net.conv_bn(cin, pool, 1))]
    return lambda x: net.concat([b(x) for b in branches])


def googlenet(net: Net, width_div: int = 1, num_classes: int = 1000) -> Layer:
    def w(c: int) -> int:
        return max(1, c // width_div)

    layers = [net.conv_bn(3, w(64), 7, 2), net.max_pool(3, 2, 1), net.conv_bn(w(64), w(64), 1),
              net.conv_bn(w(64), w(192), 3), net.max_pool(3, 2, 1)]
    cin = w(192)
    for name, chans in INCEPTION.items():
        c1, r3, c3, r5, c5, pool = (w(c) for c in chans)
        layers.append(_inception(net, cin, c1, r3, c3, r5, c5, pool))
        cin = c1 + c3 + c5 + pool
        if name in ("3b", "4e"):
            layers.append(net.max_pool(3, 2, 1))
    return seq(*layers, net.pooled, net.linear(cin, num_classes))  # dropout: none in eval


# --- MobileNetV2 and EfficientNet -------------------------------------------------------------------


def _residual(net: Net, body: Layer, cin: int, cout: int, stride: int) -> Layer:
    return (lambda x: net.add(x, body(x))) if stride == 1 and cin == cout else body


def _inverted_residual(net: Net, cin: int, cout: int, stride: int, expand: int) -> Layer:
    hidden = cin * expand
    parts = [] if expand == 1 else [net.conv_bn(cin, hidden, 1, act="relu6")]
    parts += [net.conv_bn(hidden, hidden, 3, stride, groups=hidden, act="relu6"), net.conv_bn(hidden, cout, 1, act=None)]
    return _residual(net, seq(*parts), cin, cout, stride)


def mobilenet_v2(net: Net, width_mult: float = 1.0, num_classes: int = 1000) -> Layer:
    cin = divisible(32 * width_mult)
    last = divisible(1280 * width_mult) if width_mult < 1 else 1280
    layers = [net.conv_bn(3, cin, 3, 2, act="relu6")]
    for t, c, n, s in MOBILENET_V2:
        cout = divisible(c * width_mult)
        for i in range(n):
            layers.append(_inverted_residual(net, cin, cout, s if i == 0 else 1, t))
            cin = cout
    layers.append(net.conv_bn(cin, last, 1, act="relu6"))
    return seq(*layers, net.pooled, net.linear(last, num_classes))


def _squeeze_excite(net: Net, channels: int, squeezed: int) -> Layer:
    reduce, expand = net.conv(channels, squeezed, 1, bias=True), net.conv(squeezed, channels, 1, bias=True)

    def apply(x: str) -> str:
        s = net.op("ReduceMean", [x], axes=[2, 3], keepdims=1)
        return net.op("Mul", [x, net.op("Sigmoid", [expand(net.act(reduce(s), "silu"))])])
    return apply


def _mbconv(net: Net, cin: int, cout: int, k: int, stride: int, expand: int) -> Layer:
    hidden = cin * expand
    parts = [] if expand == 1 else [net.conv_bn(cin, hidden, 1, act="silu")]
    parts += [net.conv_bn(hidden, hidden, k, stride, groups=hidden, act="silu"), _squeeze_excite(net, hidden, max(1, cin // 4)),
              net.conv_bn(hidden, cout, 1, act=None)]
    return _residual(net, seq(*parts), cin, cout, stride)


def efficientnet(net: Net, width_mult: float = 1.0, max_repeats: int = 4, num_classes: int = 1000) -> Layer:
    cin = divisible(32 * width_mult)
    layers = [net.conv_bn(3, cin, 3, 2, act="silu")]
    for t, c, n, s, k in EFFICIENTNET_B0:
        cout = divisible(c * width_mult)
        for i in range(min(n, max_repeats)):
            layers.append(_mbconv(net, cin, cout, k, s if i == 0 else 1, t))
            cin = cout
    head = divisible(1280 * width_mult)
    layers.append(net.conv_bn(cin, head, 1, act="silu"))
    return seq(*layers, net.pooled, net.linear(head, num_classes))


# --- DenseNet and U-Net ---------------------------------------------------------------------------


def _dense_layer(net: Net, cin: int, growth: int, bn_size: int = 4) -> Layer:
    norm = net.bn(cin)
    inner = net.conv_bn(cin, bn_size * growth, 1)  # its norm follows the convolution: folded, as PyTorch exports it
    out = net.conv(bn_size * growth, growth, 3)
    return lambda x: net.concat([x, out(inner(net.act(norm(x), "relu")))])


def _transition(net: Net, c: int) -> Layer:
    norm, conv, pool = net.bn(c), net.conv(c, c // 2, 1), net.avg_pool(2, 2)
    return lambda x: pool(conv(net.act(norm(x), "relu")))


def densenet(net: Net, growth: int, blocks: tuple[int, ...], init_features: int, num_classes: int = 1000) -> Layer:
    layers = [net.conv_bn(3, init_features, 7, 2), net.max_pool(3, 2, 1)]
    c = init_features
    for i, n in enumerate(blocks):
        for _ in range(n):
            layers.append(_dense_layer(net, c, growth))
            c += growth
        if i != len(blocks) - 1:
            layers.append(_transition(net, c))
            c //= 2
    norm = net.bn(c)
    fc = net.linear(c, num_classes)
    return seq(*layers, lambda x: fc(net.pooled(net.act(norm(x), "relu"))))


def _double_conv(net: Net, cin: int, cout: int) -> Layer:
    return seq(net.conv_bn(cin, cout, 3), net.conv_bn(cout, cout, 3))


def unet(net: Net, base: int = 64, num_classes: int = 2, depth: int = 4) -> Layer:
    chans = [base * 2**i for i in range(depth + 1)]
    inc = _double_conv(net, 3, chans[0])
    downs = [seq(net.max_pool(2, 2), _double_conv(net, chans[i], chans[i + 1])) for i in range(depth)]
    ups = [net.conv_transpose(chans[i + 1], chans[i], 2, 2) for i in reversed(range(depth))]
    up_convs = [_double_conv(net, chans[i] * 2, chans[i]) for i in reversed(range(depth))]
    head = net.conv(chans[0], num_classes, 1, bias=True)

    def apply(x: str) -> str:
        skips = [inc(x)]
        for down in downs:
            skips.append(down(skips[-1]))
        x = skips.pop()
        for up, conv in zip(ups, up_convs):
            x = conv(net.concat([skips.pop(), up(x)]))
        return head(x)
    return apply


# --- Vision Transformer ---------------------------------------------------------------------------


def _attention(net: Net, dim: int, heads: int) -> Layer:
    qkv, proj = net.linear(dim, dim * 3, tokens=True), net.linear(dim, dim, tokens=True)
    head_dim = dim // heads

    def apply(x: str) -> str:
        t = net.op("Transpose", [net.op("Reshape", [qkv(x), net.ints(0, -1, 3, heads, head_dim)])], perm=[2, 0, 3, 1, 4])
        q, k, v = (net.op("Squeeze", [part, net.ints(0)]) for part in net.ops("Split", [t, net.ints(1, 1, 1)], 3, axis=0))
        scores = net.op("Mul", [net.op("MatMul", [q, net.op("Transpose", [k], perm=[0, 1, 3, 2])]), net.scalar(head_dim ** -0.5)])
        out = net.op("MatMul", [net.op("Softmax", [scores], axis=-1), v])
        return proj(net.op("Reshape", [net.op("Transpose", [out], perm=[0, 2, 1, 3]), net.ints(0, -1, dim)]))
    return apply


def _encoder_block(net: Net, dim: int, heads: int, mlp: int) -> Layer:
    norm1, attn, norm2 = net.layer_norm(dim), _attention(net, dim, heads), net.layer_norm(dim)
    fc1, fc2 = net.linear(dim, mlp, tokens=True), net.linear(mlp, dim, tokens=True)

    def apply(x: str) -> str:
        x = net.add(x, attn(norm1(x)))
        return net.add(x, fc2(net.gelu(fc1(norm2(x)))))
    return apply


def vit(net: Net, image: int = 224, patch: int = 16, dim: int = 384, depth: int = 12, heads: int = 6, mlp: int = 1536,
        num_classes: int = 1000) -> Layer:
    # a module's own parameters come before its children's in PyTorch's order
    cls = net.tensor(net.param((1, 1, dim), "normal"), "cls_token")
    pos = net.tensor(net.param((1, (image // patch) ** 2 + 1, dim), "normal"), "pos_embedding")
    embed = net.conv(3, dim, patch, patch, bias=True, pad=0)
    blocks = seq(*[_encoder_block(net, dim, heads, mlp) for _ in range(depth)])
    norm, head = net.layer_norm(dim), net.linear(dim, num_classes)

    def apply(x: str) -> str:
        tokens = net.op("Transpose", [net.op("Reshape", [embed(x), net.ints(0, dim, -1)])], perm=[0, 2, 1])
        batch = net.op("Slice", [net.op("Shape", [x]), net.ints(0), net.ints(1)])
        cls_tokens = net.op("Expand", [cls, net.concat([batch, net.ints(1, dim)], axis=0)])
        t = blocks(net.add(net.concat([cls_tokens, tokens]), pos))
        return head(net.op("Gather", [norm(t), net.tensor(np.array(0, np.int64), "index")], axis=1))
    return apply


BUILDERS: dict[str, Callable[..., Layer]] = {
    "resnet": resnet, "googlenet": googlenet, "mobilenet_v2": mobilenet_v2, "densenet": densenet, "unet": unet,
    "efficientnet": efficientnet, "vit": vit,
}


def _batch_norm_stats(net: Net, out: str, seed: int, chw: tuple[int, int, int]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Each batch norm's (mean, running variance) from the seeded calibration batch, in training mode
    (`net`: the architecture built with `stats` None, `out` its output)."""
    if not net.stat_outputs:
        return {}
    names = [n for _, mean, var, shape in net.stat_outputs for n in (mean, var, shape)]
    model = net.model(out, names, batch=weights.CALIBRATION_BATCH, chw=chw)
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise RuntimeError(f"the zoo's ONNX builder sets batch-norm statistics with ONNX Runtime ({e}): "
                           "pip install 'bench[ort]', or onnxruntime-gpu") from None
    so = ort.SessionOptions()
    # one thread: the same file every time on this machine. Another CPU may run other kernels and differ in the
    # statistics' last bits (as PyTorch's calibration did), hence its own file hash: a cached file is kept
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    so.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    values = session.run(names, {"input": weights.calibration_batch(seed, chw)})
    stats = {}
    for i, (index, *_) in enumerate(net.stat_outputs):
        mean, var, shape = values[3 * i: 3 * i + 3]
        stats[index] = (mean.reshape(-1), weights.unbiased(var.reshape(-1), int(shape[0] * shape[2] * shape[3])))
    return stats


def build(builder: str, kwargs: dict, seed: int, chw: tuple[int, int, int]) -> onnx.ModelProto:
    """The architecture as an ONNX model with a dynamic batch axis, weights drawn from `seed`."""
    calibration = Net(seed, None)
    stats = _batch_norm_stats(calibration, BUILDERS[builder](calibration, **kwargs)("input"), seed, chw)
    net = Net(seed, stats, calibration.drawn)
    out = BUILDERS[builder](net, **kwargs)("input")
    return net.model(out, chw=chw)
