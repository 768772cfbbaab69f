"""A content-addressed cache of expensive artifacts: converted and quantized models, compiled
libraries, tuning databases, engines.

An entry is a directory `<root>/<kind>/<digest>/` holding the artifact files and `entry.json`: the
key material the digest was made from, and each file's size and sha256. A hit is used only if
`entry.json` parses, its key equals the requested key, and every file still hashes the same;
otherwise the entry is removed and rebuilt. Entries are built in a temporary directory and renamed
into place, so a reader never sees half an entry and two builders never corrupt each other.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

FORMAT_VERSION = 1
ENTRY = "entry.json"


def default_root() -> Path:
    env = os.environ.get("BENCH_CACHE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "bench"


def digest(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:24]


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _files(d: Path) -> dict[str, dict[str, Any]]:
    return {
        str(p.relative_to(d)): {"size": p.stat().st_size, "sha256": file_sha256(p)}
        for p in sorted(d.rglob("*"))
        if p.is_file() and p.name != ENTRY
    }


@dataclass
class ArtifactCache:
    root: Path
    enabled: bool = True
    scratch: Path | None = None  # where entries are built, and left, when the cache is disabled

    def _check(self, d: Path, key: dict[str, Any]) -> str:
        """Why entry `d` can't be used, or an empty string."""
        try:
            meta = json.loads((d / ENTRY).read_text())
        except (OSError, json.JSONDecodeError) as e:
            return f"unreadable {ENTRY}: {e}"
        if meta.get("format_version") != FORMAT_VERSION:
            return "stale format"
        if meta.get("key") != json.loads(json.dumps(key, default=str)):
            return "key mismatch"
        for name, want in meta.get("files", {}).items():
            p = d / name
            if not p.is_file() or p.stat().st_size != want["size"] or file_sha256(p) != want["sha256"]:
                return f"{name} changed or missing"
        return ""

    def get_or_build(self, kind: str, key: dict[str, Any], build: Callable[[Path], None]) -> tuple[Path, bool]:
        """The entry's directory, and whether it came from the cache. `build(dir)` writes the files."""
        final = self.root / kind / digest(key)
        if self.enabled and final.is_dir():
            if not self._check(final, key):
                return final, True
            shutil.rmtree(final, ignore_errors=True)  # corrupt or stale: never used, rebuilt below
        parent = self.root / kind if self.enabled else (self.scratch or Path(tempfile.gettempdir())) / "uncached"
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=parent, prefix=".build-"))
        try:
            build(tmp)
            (tmp / ENTRY).write_text(json.dumps({"format_version": FORMAT_VERSION, "kind": kind, "key": key,
                                                 "files": _files(tmp)}, indent=1, default=str))
            if not self.enabled:
                return tmp, False  # the caller uses it; nothing is kept for later
            try:
                os.rename(tmp, final)
            except OSError:  # another process finished the same entry first: use theirs
                shutil.rmtree(tmp, ignore_errors=True)
                if self._check(final, key):
                    raise
            return final, False
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def keep_dir(self, kind: str, key: dict[str, Any]) -> Path:
        """A directory an engine's own cache lives in between cells (TensorRT's timing cache, ONNX
        Runtime's engine cache), under the root and keyed; the scratch directory when the cache is
        off. Made if missing."""
        base = self.root if self.enabled else (self.scratch or Path(tempfile.gettempdir()))
        d = base / kind / digest(key)
        d.mkdir(parents=True, exist_ok=True)
        return d

    def lookup(self, kind: str, key: dict[str, Any]) -> Path | None:
        """The entry's directory when a valid one exists (a corrupt one is removed), else None."""
        final = self.root / kind / digest(key)
        if not self.enabled or not final.is_dir():
            return None
        if self._check(final, key):
            shutil.rmtree(final, ignore_errors=True)
            return None
        return final

    def entries(self) -> list[dict[str, Any]]:
        out = []
        if not self.root.is_dir():
            return out
        for d in sorted(self.root.glob("*/*")):
            if not d.is_dir() or d.name.startswith("."):
                continue
            try:
                meta = json.loads((d / ENTRY).read_text())
            except (OSError, json.JSONDecodeError):
                meta = {"kind": d.parent.name, "key": {}, "files": {}}
            size = sum(p.stat().st_size for p in d.rglob("*") if p.is_file())
            out.append({"kind": d.parent.name, "digest": d.name, "size_mb": size / 2**20, "key": meta.get("key", {}), "path": str(d)})
        return out

    def clear(self, kind: str | None = None) -> int:
        targets = [e for e in self.entries() if kind is None or e["kind"] == kind]
        for e in targets:
            shutil.rmtree(e["path"], ignore_errors=True)
        return len(targets)
