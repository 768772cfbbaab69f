"""Reference outputs for a run: from goldens, from the run directory (a resumed run keeps its own),
from the artifact cache (keyed by everything they depend on), or computed by the reference
backend in a worker. Once per model and batch size, whichever cell asks first."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Any, Callable

from bench import goldens
from bench.backends import describe
from bench.cache import ArtifactCache
from bench.config import Config
from bench.jobs import encode, input_source
from bench.models.freeze import PREPARE_VERSION, model_sha256
from bench.models.prepare import ModelInfo

Found = tuple[str | None, str | None]  # (path to the outputs, or None and why)


class References:
    def __init__(self, config: Config, run_dir: Path, cache_dir: Path, use_cache: bool,
                 compute: Callable[[dict[str, Any], str, str], Any]):
        self.config, self.run_dir, self.cache_dir, self.use_cache = config, run_dir, cache_dir, use_cache
        self.compute = compute  # (job, name, target) -> bench.worker.Outcome: runs a reference job
        self.found: dict[tuple[str, int], Found] = {}
        self._lock = threading.Lock()
        self._versions: dict[str, str] | None = None

    def get(self, info: ModelInfo, batch: int, target: str) -> Found:
        with self._lock:
            if (info.name, batch) not in self.found:
                self.found[(info.name, batch)] = self._find(info, batch, target)
            return self.found[(info.name, batch)]

    def _find(self, info: ModelInfo, batch: int, target: str) -> Found:
        fname = goldens.file_name(info.name, batch)
        if self.config.goldens is not None:
            path = Path(self.config.goldens) / fname
            return (str(path), None) if path.is_file() else (None, f"no golden outputs at {path}; run `bench golden save`")
        path = self.run_dir / "references" / fname
        if path.is_file():  # a resumed run keeps the references it already computed
            return str(path), None
        key = self._key(info, batch)
        hit = self._cache.lookup("reference-outputs", key) if key else None
        if hit is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(hit / "outputs.npz", path)
            return str(path), None
        job = encode("reference", self.config, info, batch_size=batch, out_path=path, work_dir=self.run_dir / "work",
                     cache_dir=self.cache_dir, use_cache=self.use_cache)
        outcome = self.compute(job, f"reference-{info.name}-b{batch}", target)
        if outcome.status != "done" or outcome.error is not None:
            return None, f"reference {outcome.status if outcome.status != 'done' else 'failed'}: {outcome.error}"
        key = key or self._key(info, batch)  # a zoo model exists once the worker built it
        if key:
            self._cache.get_or_build("reference-outputs", key, lambda d: shutil.copyfile(path, d / "outputs.npz"))
        return str(path), None

    @property
    def _cache(self) -> ArtifactCache:
        return ArtifactCache(self.cache_dir, self.use_cache, scratch=self.run_dir / "work")

    def _key(self, info: ModelInfo, batch: int) -> dict[str, Any] | None:
        """What reference outputs depend on; None while the model file does not exist yet."""
        if not info.path.is_file():
            return None
        if self._versions is None:
            self._versions = describe(self.config.reference.backend)["versions"]
        ref = self.config.reference
        return {"model_sha256": model_sha256(info.path), "prepared": PREPARE_VERSION, "batch_size": batch, "seed": self.config.seed,
                "input_shapes": {k: list(v) for k, v in info.shapes(batch).items()},
                "iterations": self.config.validation.iterations, "input_source": input_source(self.config, info.name),
                "reference": f"{ref.backend}/{ref.precision}", "threads": self.config.threads_for(ref.backend),
                "versions": self._versions}
