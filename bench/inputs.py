"""Seeded inputs: the same arrays for a model and batch size in every run, for every backend."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from bench.config import BATCH, ImageData
from bench.errors import BenchError
from bench.models.prepare import ModelInfo


def seeded_feeds(info: ModelInfo, batch_size: int, seed: int, iterations: int) -> list[dict[str, np.ndarray]]:
    """`iterations` feed dicts, ordered as the model's inputs. Floats are N(0, 1), like normalized
    images; integers are in [0, 10); booleans are fair coin flips. An input's `value_range`
    (config: input_ranges) makes floats uniform and integers uniform in [low, high)."""
    rng = np.random.default_rng([seed, batch_size, zlib.crc32(info.name.encode())])
    feeds = []
    for _ in range(iterations):
        feed = {}
        for inp in info.inputs:
            shape, dtype, lo_hi = inp.shape(batch_size), np.dtype(inp.dtype), inp.value_range
            if dtype.kind == "f":
                arr = (rng.standard_normal(shape, dtype=np.float32) if lo_hi is None
                       else rng.uniform(lo_hi[0], lo_hi[1], size=shape)).astype(dtype)
            elif dtype.kind == "b":
                arr = rng.random(shape) < 0.5
            elif dtype.kind in "iu":
                low, high = (0, 10) if lo_hi is None else (int(np.ceil(lo_hi[0])), int(np.ceil(lo_hi[1])))
                arr = rng.integers(low, high, size=shape).astype(dtype)
            else:
                raise ValueError(f"input {inp.name!r}: cannot generate data of type {dtype}")
            feed[inp.name] = arr
        feeds.append(feed)
    return feeds


def calibration_feeds(info: ModelInfo, seed: int, samples: int) -> list[dict[str, np.ndarray]]:
    """Batch-1 inputs for int8 calibration, from a stream of their own: never the validation inputs."""
    return seeded_feeds(info, 1, seed + 1_000_003, samples)


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def check_image_data(info: ModelInfo, data: ImageData, where: str) -> None:
    """Raise BenchError when the image folder can't feed this model."""
    folder = Path(data.images)
    if not folder.is_dir():
        raise BenchError(f"{where}.data.images: {folder} is not a directory")
    if not image_files(folder):
        raise BenchError(f"{where}.data.images: {folder} holds no {', '.join(IMAGE_SUFFIXES)} files")
    float_inputs = [i for i in info.inputs if np.dtype(i.dtype).kind == "f"]
    if len(info.inputs) != 1 or not float_inputs or len(info.inputs[0].dims) != 4 or info.inputs[0].dims[1] != 3:
        raise BenchError(f"{where}.data: image folders feed models with one float NCHW input of 3 channels; "
                         f"this one takes {[(i.name, list(i.dims)) for i in info.inputs]}")
    h, w = info.inputs[0].dims[2:]
    if min(h, w) > data.resize:
        raise BenchError(f"{where}.data.resize: {data.resize} is smaller than the input's {h}x{w} crop")


def _load_image(path: Path, data: ImageData, hw: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("RGB")
        w, h = img.size
        scale = data.resize / min(w, h)
        img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)
        w, h = img.size
        top, left = (h - hw[0]) // 2, (w - hw[1]) // 2
        img = img.crop((left, top, left + hw[1], top + hw[0]))
        arr = np.asarray(img, dtype=np.float32) / 255.0
    arr = (arr - np.asarray(data.mean, np.float32)) / np.asarray(data.std, np.float32)
    return arr.transpose(2, 0, 1)


def image_feeds(info: ModelInfo, data: ImageData, batch_size: int, count: int, offset: int = 0) -> list[dict[str, np.ndarray]]:
    """`count` batches of images from the folder, in name order, wrapping around; `offset` skips images."""
    files = image_files(Path(data.images))
    inp = info.inputs[0]
    hw = tuple(inp.shape(batch_size)[2:])
    feeds, k = [], offset
    for _ in range(count):
        batch = [_load_image(files[(k + j) % len(files)], data, hw) for j in range(batch_size)]
        k += batch_size
        feeds.append({inp.name: np.stack(batch).astype(inp.dtype)})
    return feeds


def calibration_overlap(data: ImageData, samples: int, skip: int) -> int:
    """How many calibration images are also validation images: 0 unless the folder holds fewer
    than skip + samples images (then calibration wraps around into them, which flatters int8)."""
    n = len(image_files(Path(data.images)))
    validation = set(range(min(skip, n)))
    return len({(skip + i) % n for i in range(samples)} & validation) if n else 0


def validation_feeds(info: ModelInfo, data: ImageData | None, batch_size: int, seed: int, iterations: int) -> list[dict[str, np.ndarray]]:
    if data is None:
        return seeded_feeds(info, batch_size, seed, iterations)
    return image_feeds(info, data, batch_size, iterations)


def calibration_set(info: ModelInfo, data: ImageData | None, seed: int, samples: int, batch_size: int = 1,
                    skip: int = 0) -> list[dict[str, np.ndarray]]:
    """The int8 calibration set: from the image folder when there is one, starting after the `skip`
    images validation uses (the largest batch size x validation iterations: calibration_overlap
    says how many it must reuse when the folder is too small), else seeded random inputs of a
    stream of their own.

    The samples are the same for every batch size; for a model frozen to `batch_size` they are
    grouped into batches of that size, the last one filled by wrapping around (min/max calibration
    is unchanged by a sample seen twice)."""
    single = calibration_feeds(info, seed, samples) if data is None else image_feeds(info, data, 1, samples, offset=skip)
    if batch_size == 1:
        return single
    batches = []
    for start in range(0, len(single), batch_size):
        group = [single[(start + j) % len(single)] for j in range(batch_size)]
        batches.append({i.name: np.concatenate([g[i.name] for g in group], axis=i.dims.index(BATCH))
                        if BATCH in i.dims else group[0][i.name] for i in info.inputs})
    return batches
