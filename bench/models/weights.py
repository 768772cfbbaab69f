"""The zoo's seeded weights, drawn with numpy so that every route that builds a zoo model gets the same.

Both builders (bench.models.onnx_zoo, which writes the graph directly, and bench.models.torch_zoo,
which exports a PyTorch module) take parameter k of an architecture, counted in PyTorch's
registration order, from `draw(seed, k, ...)`, and calibrate batch norm on `calibration_batch`.
The distributions are PyTorch's defaults: convolution and linear weights and biases uniform in
±1/sqrt(fan_in) (kaiming_uniform with a=sqrt(5)), norms' scales one and shifts zero, free
parameters (a ViT's class token and position table) normal with std 0.02.

Draws use numpy's legacy RandomState, whose streams numpy keeps fixed across releases; each
parameter seeds its own, so one parameter's draw never depends on the size of another.
"""

from __future__ import annotations

import math

import numpy as np

KINDS = ("weight", "bias", "ones", "zeros", "normal")
CALIBRATION_BATCH = 8  # images in the seeded batch that sets batch-norm statistics
BN_EPS = 1e-5  # PyTorch's BatchNorm2d default, and ONNX BatchNormalization's


def _key(seed: int, *words: int) -> list[int]:
    """RandomState's seed words: a seed of any size as 32-bit words (one word below 2**32), then `words`."""
    out = [seed & 0xFFFFFFFF]
    seed >>= 32
    while seed:
        out.append(seed & 0xFFFFFFFF)
        seed >>= 32
    return [*out, *words]


def draw(seed: int, index: int, shape: tuple[int, ...], kind: str, fan_in: int | None = None) -> np.ndarray:
    """Parameter `index` of a zoo model: float32 of `shape`. A weight's fan-in is its shape past
    the first axis (PyTorch's rule for Conv2d, ConvTranspose2d and Linear); a bias takes its
    weight's fan-in, given."""
    if kind == "ones":
        return np.ones(shape, np.float32)
    if kind == "zeros":
        return np.zeros(shape, np.float32)
    if kind not in KINDS:
        raise ValueError(f"unknown parameter kind {kind!r}; valid: {', '.join(KINDS)}")
    rng = np.random.RandomState(_key(seed, index))
    if kind == "normal":
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)
    if kind == "weight":
        fan_in = math.prod(shape[1:])
    elif not fan_in:
        raise ValueError("a bias is drawn from its weight's fan-in: none given")
    bound = 1.0 / math.sqrt(fan_in)
    return rng.uniform(-bound, bound, shape).astype(np.float32)


def calibration_batch(seed: int, chw: tuple[int, int, int]) -> np.ndarray:
    """The seeded standard-normal images whose batch statistics become the batch-norm running statistics."""
    rng = np.random.RandomState(_key(seed, 2**31 - 1))
    return rng.standard_normal((CALIBRATION_BATCH, *chw)).astype(np.float32)


def unbiased(var: np.ndarray, count: int) -> np.ndarray:
    """The running variance PyTorch stores after one batch with momentum None: the batch's variance
    with Bessel's correction (normalization in that pass used the biased one)."""
    return var * (count / max(count - 1, 1))
