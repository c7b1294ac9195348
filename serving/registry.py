"""Versioned artefacts with an atomically switched `current` pointer: `<workdir>/registry/<name>/<version>/`.

A version is written to `<name>/.staging-<version>/`, gets its `manifest.json`, and is renamed into place in one
`os.replace`; only then is `<name>/current` (a small text file holding the version) replaced, again with one
`os.replace`. A reader therefore sees either the old version or the new one, never a half-written one. Rolling back
is pointing `current` at an older version (`fashionrec rollback`).

The serving bundle (`SERVING`) is what `fashionrec serve` reads: the catalog, the ID checkpoint, the title model, the
variant ranker, the LLM adapter and the vector collections, published together so that a swap is consistent. Its
manifest names the data snapshot (row counts and content hashes of the canonical tables), the metrics of the run
that trained it, and its parent (the version it was derived from, for an incremental update).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SERVING = "serving"
POINTER = "current"
MANIFEST = "manifest.json"
KEEP = 3  # versions kept per name after a publish (the current one always survives); ~0.4 GB each on medium-s0


@dataclass(frozen=True)
class Version:
    name: str
    version: str
    path: Path
    manifest: dict[str, Any]


class Registry:
    """See the module docstring."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    @classmethod
    def of(cls, workdir: Path | str) -> Registry:
        return cls(Path(workdir) / "registry")

    def _dir(self, name: str) -> Path:
        return self.root / name

    def new_version(self) -> str:
        """A sortable, unique version name: UTC time to the microsecond."""
        return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"{time.time_ns() // 1000 % 1_000_000:06d}Z"

    def stage(self, name: str, version: str | None = None, parent: Version | None = None) -> tuple[str, Path]:
        """A staging folder for a new version, a copy of `parent`'s files when given (an incremental update).

        One publisher at a time: a staging folder left by an earlier publisher that died (killed mid-copy) is removed
        here; it was never a version, and `current` never pointed at it."""
        version = version or self.new_version()
        staging = self._dir(name) / f".staging-{version}"
        for stale in self._dir(name).glob(".staging-*") if self._dir(name).exists() else []:
            shutil.rmtree(stale, ignore_errors=True)
        if parent is not None:
            shutil.copytree(parent.path, staging, ignore=shutil.ignore_patterns(MANIFEST, "*.lock"))
        else:
            staging.mkdir(parents=True)
        return version, staging

    def commit(self, name: str, version: str, staging: Path, manifest: dict[str, Any], activate: bool = True
               ) -> Version:
        """Write the manifest, move the staged folder into place, and (by default) point `current` at it."""
        manifest = {"name": name, "version": version, "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    **manifest}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
        final = self._dir(name) / version
        os.replace(staging, final)
        out = Version(name, version, final, manifest)
        if activate:
            self.activate(name, version)
            self.prune(name)
        return out

    def activate(self, name: str, version: str) -> None:
        """Point `current` at an existing version, atomically."""
        if not (self._dir(name) / version / MANIFEST).exists():
            raise KeyError(f"no version {version!r} of {name!r} in {self.root}; have {self.versions(name)}")
        tmp = self._dir(name) / f".{POINTER}.{os.getpid()}.tmp"
        tmp.write_text(version)
        os.replace(tmp, self._dir(name) / POINTER)

    def current(self, name: str) -> Version | None:
        """The version `current` points at, or None before the first publish."""
        try:
            version = (self._dir(name) / POINTER).read_text().strip()
        except FileNotFoundError:
            return None
        path = self._dir(name) / version
        return Version(name, version, path, json.loads((path / MANIFEST).read_text()))

    def pointer_stamp(self, name: str) -> str | None:
        """The pointer's content, cheap enough to check on every request."""
        try:
            return (self._dir(name) / POINTER).read_text().strip()
        except FileNotFoundError:
            return None

    def versions(self, name: str) -> list[str]:
        d = self._dir(name)
        return sorted(p.name for p in d.iterdir() if (p / MANIFEST).exists()) if d.exists() else []

    def rollback(self, name: str, version: str | None = None) -> str:
        """Point `current` at `version`, or at the version before the current one; returns it."""
        versions = self.versions(name)
        if version is None:
            cur = self.pointer_stamp(name)
            older = [v for v in versions if cur is None or v < cur]
            if not older:
                raise KeyError(f"no version of {name!r} older than {cur!r} to roll back to")
            version = older[-1]
        self.activate(name, version)
        return version

    def prune(self, name: str, keep: int = KEEP) -> list[str]:
        """Remove all but the newest `keep` versions (never the current one); returns those removed."""
        cur = self.pointer_stamp(name)
        versions = self.versions(name)
        removed = [v for v in versions[:-keep] if v != cur] if keep > 0 else []
        for v in removed:
            shutil.rmtree(self._dir(name) / v, ignore_errors=True)
        return removed


def file_digest(*paths: Path) -> str:
    """A short content hash of files (or of every file under a folder)."""
    h = hashlib.sha256()
    for p in paths:
        files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
        for f in files:
            h.update(f.name.encode())
            with f.open("rb") as fh:
                for chunk in iter(lambda fh=fh: fh.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()[:12]
