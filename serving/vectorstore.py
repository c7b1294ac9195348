"""Item and query vectors in Qdrant: one collection per kind, a `partition` payload (the category) with an index.

Two engines sit behind one `VectorStore` interface and one code path:
- **Qdrant Edge** (`qdrant-edge-py`, Qdrant's Rust engine in process), the local default: one `EdgeShard` per
  collection under `<path>/<name>/`, a plain (exact) index and a keyword payload index on `partition`.
  `benchmarks/vectorstore.py` measured it against HNSW, qdrant-client's local mode and a numpy scan; at our sizes
  (~100k points) the plain index is exact, needs no build, and a category-filtered top-100 takes ~1 ms.
- **A Qdrant server** by URL through qdrant-client (`FASHIONREC_QDRANT_URL`), the scale path. qdrant-client's own
  local mode (`VectorStore.client_local`) runs the same client calls in process; the store tests run against both
  engines, and the benchmark uses it as its baseline.

Search "within a category" is a filtered search on `partition`; a collection holds every partition. Point ids are
uuid5 of the caller's string id, so upserts are idempotent. A shard is opened by one process at a time (its WAL
takes a lock): a second process gets a clear error that names the likely holder.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import threading
import uuid
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self

import numpy as np

if TYPE_CHECKING:
    from serving.config import Settings

logger = logging.getLogger(__name__)

# Fixed forever: point ids are uuid5(POINT_NAMESPACE, item id), so changing it re-keys every stored point.
POINT_NAMESPACE = uuid.UUID("6f1c2a9e-3b7d-5e4f-9a0b-8c1d2e3f4a5b")
ID_KEY = "id"  # payload key holding the caller's string id
PARTITION_KEY = "partition"  # payload key holding the partition value (indexed as a keyword)
_NAME_RE = re.compile(r"[A-Za-z0-9]+(?:[-_][A-Za-z0-9]+)*")
_QUERY_CHUNK = 256  # requests per batched query (one HTTP round trip on a server)
_META = "collection.json"


class StoreUnavailable(RuntimeError):
    """The vector engine cannot be reached or opened (a server down, a shard locked or missing)."""


@dataclass(frozen=True, slots=True)
class Hit:
    """One search result: the caller's string id, cosine similarity and stored payload."""

    id: str
    score: float
    payload: dict[str, Any]


def point_id(item_id: str) -> str:
    """Return the deterministic Qdrant point id (a UUID string) for a string id."""
    return str(uuid.uuid5(POINT_NAMESPACE, item_id))


def point_ids(item_ids: Sequence[str]) -> dict[str, str]:
    """Point id -> string id, for `VectorStore.search(..., id_of=...)`."""
    return {point_id(i): i for i in item_ids}


def check_name(name: str) -> str:
    """Return `name` if it is a valid collection name (alphanumeric words joined by single '-' or '_')."""
    if not _NAME_RE.fullmatch(name):
        raise ValueError(f"collection name {name!r} must be alphanumeric words joined by single '-' or '_'")
    return name


class _Backend(Protocol):
    def names(self) -> list[str]: ...
    def dim(self, name: str) -> int | None: ...
    def create(self, name: str, dim: int) -> None: ...
    def delete(self, name: str) -> None: ...
    def upsert(self, name: str, ids: list[str], vectors: np.ndarray, payloads: list[dict[str, Any]]) -> None: ...
    def query(self, name: str, vectors: np.ndarray, k: int, partition: str | None,
              id_of: Mapping[str, str] | None = None) -> list[list[Hit]]: ...
    def count(self, name: str, partition: str | None) -> int: ...
    def partitions(self, name: str) -> list[str]: ...
    def scroll(self, name: str, batch: int) -> Iterator[tuple[dict[str, Any], list[float]]]: ...
    def ping(self) -> None: ...
    def close(self) -> None: ...


PRIVATE_COPY_PREFIX = "fashionrec-qdrant-worker-"  # + the worker's pid: its parent removes it if the worker dies


def remove_private_copies(pid: int) -> int:
    """Remove the private copies a (dead) process left in the temporary directory; how many there were."""
    found = list(Path(tempfile.gettempdir()).glob(f"{PRIVATE_COPY_PREFIX}{pid}-*"))
    for d in found:
        shutil.rmtree(d, ignore_errors=True)
    return len(found)


class VectorStore:
    """Cosine collections keyed by string ids, with an optional partition (category) per point."""

    def __init__(self, backend: _Backend, *, engine: str) -> None:
        self._backend = backend
        self.engine = engine  # "qdrant-edge", "qdrant-client-local" or "qdrant-server", for reports

    # -- constructors -------------------------------------------------------------------------------

    @classmethod
    def local(cls, path: str | Path) -> Self:
        """Qdrant Edge shards under `path` (the local default; one process at a time per shard)."""
        return cls(_EdgeBackend(Path(path)), engine="qdrant-edge")

    @classmethod
    def memory(cls) -> Self:
        """Qdrant Edge in a temporary directory, removed on close (tests, throwaway indexes)."""
        tmp = tempfile.mkdtemp(prefix="fashionrec-qdrant-")
        return cls(_EdgeBackend(Path(tmp), owned=True), engine="qdrant-edge")

    @classmethod
    def private_copy(cls, path: str | Path) -> Self:
        """Qdrant Edge over this process's own copy of the shards under `path`, removed on close: how several
        worker processes serve one bundle's embedded collections (a shard opens in one process at a time)."""
        tmp = Path(tempfile.mkdtemp(prefix=f"{PRIVATE_COPY_PREFIX}{os.getpid()}-"))
        shutil.copytree(path, tmp, ignore=shutil.ignore_patterns("*.lock"), dirs_exist_ok=True)
        return cls(_EdgeBackend(tmp, owned=True), engine="qdrant-edge")

    @classmethod
    def remote(cls, url: str, api_key: str | None = None) -> Self:
        """A Qdrant server: the scale path, shared by many processes."""
        from qdrant_client import QdrantClient

        return cls(_ClientBackend(QdrantClient(url=url, api_key=api_key), remote=True), engine="qdrant-server")

    @classmethod
    def client_local(cls, location: str | Path = ":memory:") -> Self:
        """qdrant-client's local mode (exact numpy search in Python): the server's code path, in process."""
        from qdrant_client import QdrantClient

        client = QdrantClient(location=":memory:") if str(location) == ":memory:" else QdrantClient(path=str(location))
        return cls(_ClientBackend(client, remote=False), engine="qdrant-client-local")

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        """A server when `qdrant_url` is set, else Qdrant Edge at `qdrant_path`."""
        if settings.qdrant_url:
            key = settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None
            return cls.remote(settings.qdrant_url, key)
        assert settings.qdrant_path is not None  # derived from workdir by Settings
        return cls.local(settings.qdrant_path)

    # -- writes -------------------------------------------------------------------------------------

    def upsert(
        self,
        name: str,
        ids: Sequence[str],
        vectors: np.ndarray,
        payloads: Sequence[Mapping[str, Any]] | None = None,
        partitions: Sequence[str] | None = None,
        batch_size: int = 2048,
    ) -> int:
        """Insert or replace points by string id (idempotent); returns the number of points written."""
        vectors = np.asarray(vectors, dtype=np.float32)  # (n, d)
        n = len(ids)
        if vectors.ndim != 2 or vectors.shape[0] != n:
            raise ValueError(f"vectors must be (n={n}, d), got {vectors.shape}")
        if payloads is not None and len(payloads) != n:
            raise ValueError(f"got {len(payloads)} payloads for {n} ids")
        if partitions is not None and len(partitions) != n:
            raise ValueError(f"got {len(partitions)} partitions for {n} ids")
        if partitions is not None and any(not isinstance(p, str) or not p for p in partitions):
            raise ValueError("partitions must be non-empty strings")
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if n == 0:
            return 0
        check_name(name)
        dim = vectors.shape[1]
        old = self._backend.dim(name)
        if old is not None and old != dim:
            logger.warning("recreating %s: vector size %s -> %d drops its points", name, old, dim)
            self._backend.delete(name)
            old = None
        if old is None:
            self._backend.create(name, dim)
        for start in range(0, n, batch_size):
            rows = range(start, min(start + batch_size, n))
            self._backend.upsert(
                name,
                [point_id(ids[i]) for i in rows],
                vectors[start : start + len(rows)],
                [_payload(ids[i], payloads, i, None if partitions is None else partitions[i]) for i in rows],
            )
        return n

    def drop(self, name: str) -> int:
        """Delete a collection; returns 1 if it existed, else 0."""
        if self._backend.dim(check_name(name)) is None:
            return 0
        self._backend.delete(name)
        return 1

    # -- reads --------------------------------------------------------------------------------------

    def search(self, name: str, vectors: np.ndarray, k: int, partition: str | None = None,
               id_of: Mapping[str, str] | None = None) -> list[list[Hit]]:
        """Top-k hits by cosine similarity for each query row, best first, within `partition` if given.

        `id_of`: point id -> the caller's id for the points the collection holds (`point_ids`); the search then
        reads no payloads (a third of an Edge search's time), and the hits carry none. A hit the map lacks makes
        it search again with payloads. Raises KeyError for a missing collection, or for a partition that holds no points.
        """
        vectors = np.asarray(vectors, dtype=np.float32)  # (B, d)
        if vectors.ndim != 2:
            raise ValueError(f"vectors must be (B, d), got {vectors.shape}")
        if k < 1:
            raise ValueError("k must be >= 1")
        dim = self._backend.dim(check_name(name))
        if dim is None:
            raise KeyError(f"no collection {name!r}")
        if vectors.shape[1] != dim:
            raise ValueError(f"collection {name!r} holds {dim}-d vectors, got queries of {vectors.shape[1]}")
        out: list[list[Hit]] = []
        for start in range(0, len(vectors), _QUERY_CHUNK):
            out.extend(self._backend.query(name, vectors[start : start + _QUERY_CHUNK], k, partition, id_of))
        if id_of is not None and any(not h.id for hits in out for h in hits):  # a point the map lacks: read payloads
            return self.search(name, vectors, k, partition)
        if partition is not None and out and not any(out) and self._backend.count(name, partition) == 0:
            raise KeyError(f"collection {name!r} has no partition {partition!r}")
        return out

    def count(self, name: str, partition: str | None = None) -> int:
        """Points in a collection, or in one of its partitions (0 if the collection does not exist)."""
        if self._backend.dim(check_name(name)) is None:
            return 0
        return self._backend.count(name, partition)

    def partitions(self, name: str) -> list[str]:
        """The partition values present in a collection, sorted."""
        if self._backend.dim(check_name(name)) is None:
            return []
        return sorted(self._backend.partitions(name))

    def export(self, name: str, batch: int = 4096) -> tuple[list[str], np.ndarray, list[dict[str, Any]]]:
        """Every point of a collection: ids, vectors (n, d) and payloads (copying a collection between engines)."""
        dim = self._backend.dim(check_name(name))
        if dim is None:
            raise KeyError(f"no collection {name!r}")
        ids, vecs, payloads = [], [], []
        for payload, vector in self._backend.scroll(name, batch):
            ids.append(str(payload.pop(ID_KEY)))
            vecs.append(vector)
            payloads.append(payload)
        return ids, np.asarray(vecs, np.float32).reshape(len(ids), dim), payloads

    def collections(self) -> list[str]:
        """The collection names, sorted."""
        return sorted(self._backend.names())

    def ping(self) -> None:
        """Raise `StoreUnavailable` unless the engine answers (a readiness probe)."""
        self._backend.ping()

    # -- lifecycle ----------------------------------------------------------------------------------

    def close(self) -> None:
        """Release the engine (an Edge shard's lock, a client's connections)."""
        self._backend.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _payload(item_id: str, payloads: Sequence[Mapping[str, Any]] | None, i: int, partition: str | None) -> dict:
    payload = dict(payloads[i]) if payloads is not None else {}
    payload[ID_KEY] = item_id  # ours wins over a caller's "id"
    if partition is not None:
        payload[PARTITION_KEY] = partition
    return payload


def _hit(point: Any, id_of: Mapping[str, str] | None = None) -> Hit:
    if id_of is not None:  # searched without payloads: the caller's id from its point id ("" if it has none)
        return Hit(id=id_of.get(str(point.id), ""), score=float(point.score), payload={})
    payload = dict(point.payload or {})
    return Hit(id=str(payload.get(ID_KEY, point.id)), score=float(point.score), payload=payload)


# -- Qdrant Edge --------------------------------------------------------------------------------------


class _EdgeBackend:
    """One EdgeShard per collection at `<root>/<name>/shard`, its vector size in `<root>/<name>/collection.json`."""

    def __init__(self, root: Path, owned: bool = False) -> None:
        import qdrant_edge as qe

        self.qe = qe
        self.root, self.owned = root, owned
        self.root.mkdir(parents=True, exist_ok=True)
        self._shards: dict[str, Any] = {}
        self._lock = threading.Lock()  # opening and writes; Edge's own reads are thread-safe
        self._closed = False
        if owned:  # a store nobody closed still leaves no temporary directory behind
            weakref.finalize(self, shutil.rmtree, str(root), True)

    def _dir(self, name: str) -> Path:
        return self.root / name

    def names(self) -> list[str]:
        return [p.name for p in self.root.iterdir() if (p / _META).exists()] if self.root.exists() else []

    def dim(self, name: str) -> int | None:
        meta = self._dir(name) / _META
        if name in self._shards:
            return self._shards[name][1]
        if not meta.exists():
            return None
        return int(json.loads(meta.read_text())["dim"])

    def _shard(self, name: str) -> Any:
        if self._closed:
            raise StoreUnavailable(f"vector store at {self.root} is closed")
        found = self._shards.get(name)
        if found is not None:
            return found[0]
        with self._lock:
            if name not in self._shards:
                dim = self.dim(name)
                if dim is None:
                    raise KeyError(f"no collection {name!r}")
                try:
                    shard = self.qe.EdgeShard.load(str(self._dir(name) / "shard"))
                except Exception as e:  # the engine raises a bare Exception
                    raise StoreUnavailable(_open_error(self._dir(name), e)) from e
                self._shards[name] = (shard, dim)
        return self._shards[name][0]

    def create(self, name: str, dim: int) -> None:
        qe = self.qe
        with self._lock:
            path = self._dir(name)
            if path.exists():
                shutil.rmtree(path)
            cfg = qe.EdgeConfig(vectors=qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine))
            try:
                shard = qe.EdgeShard.create(str(path / "shard"), cfg)
            except Exception as e:
                raise StoreUnavailable(_open_error(path, e)) from e
            shard.update(qe.UpdateOperation.create_field_index(PARTITION_KEY, qe.PayloadSchemaType.Keyword))
            (path / _META).write_text(json.dumps({"name": name, "dim": dim, "distance": "cosine"}))
            self._shards[name] = (shard, dim)

    def delete(self, name: str) -> None:
        with self._lock:
            found = self._shards.pop(name, None)
            if found is not None:
                found[0].close()
            shutil.rmtree(self._dir(name), ignore_errors=True)

    def upsert(self, name: str, ids: list[str], vectors: np.ndarray, payloads: list[dict[str, Any]]) -> None:
        qe = self.qe
        shard = self._shard(name)
        points = [qe.Point(pid, vec, payload) for pid, vec, payload in zip(ids, vectors.tolist(), payloads, strict=True)]
        with self._lock:
            shard.update(qe.UpdateOperation.upsert_points(points))
            shard.flush()

    def _filter(self, partition: str | None) -> Any:
        qe = self.qe
        if partition is None:
            return None
        return qe.Filter(must=[qe.FieldCondition(PARTITION_KEY, match=qe.MatchValue(partition))])

    def query(self, name: str, vectors: np.ndarray, k: int, partition: str | None,
              id_of: Mapping[str, str] | None = None) -> list[list[Hit]]:
        qe = self.qe
        shard, flt = self._shard(name), self._filter(partition)
        requests = [qe.QueryRequest(limit=k, query=qe.Query.Nearest(row), filter=flt, with_payload=id_of is None)
                    for row in vectors.tolist()]
        if len(requests) == 1:
            return [[_hit(p, id_of) for p in shard.query(requests[0])]]
        return [[_hit(p, id_of) for p in points] for points in shard.query_batch(qe.QueryBatchRequest(requests))]

    def count(self, name: str, partition: str | None) -> int:
        return int(self._shard(name).count(self.qe.CountRequest(exact=True, filter=self._filter(partition))))

    def scroll(self, name: str, batch: int) -> Iterator[tuple[dict[str, Any], list[float]]]:
        shard, offset = self._shard(name), None
        while True:
            records, offset = shard.scroll(self.qe.ScrollRequest(offset=offset, limit=batch, with_payload=True,
                                                                  with_vector=True))
            for r in records:
                vec = r.vector
                yield dict(r.payload or {}), list(vec.get("", next(iter(vec.values()))) if isinstance(vec, dict) else vec)
            if offset is None:
                return

    def partitions(self, name: str) -> list[str]:
        hits = self._shard(name).facet(self.qe.FacetRequest(PARTITION_KEY, limit=1_000_000, exact=True)).hits
        return [str(h.value) for h in hits]

    def ping(self) -> None:
        if self._closed:
            raise StoreUnavailable(f"vector store at {self.root} is closed")
        if not self.root.is_dir():
            raise StoreUnavailable(f"vector store directory {self.root} is missing")
        for name in self.names():
            self._shard(name)

    def close(self) -> None:
        with self._lock:
            for shard, _ in self._shards.values():
                shard.close()
            self._shards.clear()
            self._closed = True
        if self.owned:
            shutil.rmtree(self.root, ignore_errors=True)


def _open_error(path: Path, e: Exception) -> str:
    msg = str(e)
    if "WouldBlock" in msg or "lock" in msg.lower():
        return (f"vector collection {path} is open in another process (a running `fashionrec serve` or "
                f"`fashionrec run` on this workdir?); stop it, or use a Qdrant server (FASHIONREC_QDRANT_URL): {msg}")
    return f"cannot open vector collection {path}: {msg}"


# -- qdrant-client (server, or its local mode) ---------------------------------------------------------


class _ClientBackend:
    def __init__(self, client: Any, remote: bool) -> None:
        from qdrant_client import models

        self.client, self.models, self.remote = client, models, remote

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            if self.remote and _is_connection_error(e):
                raise StoreUnavailable(f"Qdrant server unreachable: {e}") from e
            raise

    def names(self) -> list[str]:
        return [c.name for c in self._call(self.client.get_collections).collections]

    def dim(self, name: str) -> int | None:
        if not self._call(self.client.collection_exists, name):
            return None
        params = self._call(self.client.get_collection, name).config.params.vectors
        return int(params.size) if isinstance(params, self.models.VectorParams) else None

    def create(self, name: str, dim: int) -> None:
        m = self.models
        if self._call(self.client.collection_exists, name):
            self._call(self.client.delete_collection, name)
        self._call(self.client.create_collection, name,
                   vectors_config=m.VectorParams(size=dim, distance=m.Distance.COSINE))
        if self.remote:  # local mode ignores payload indexes (and warns)
            self._call(self.client.create_payload_index, name, PARTITION_KEY, m.PayloadSchemaType.KEYWORD)

    def delete(self, name: str) -> None:
        self._call(self.client.delete_collection, name)

    def upsert(self, name: str, ids: list[str], vectors: np.ndarray, payloads: list[dict[str, Any]]) -> None:
        batch = self.models.Batch(ids=ids, vectors=vectors.tolist(), payloads=payloads)
        self._call(self.client.upsert, name, points=batch, wait=True)

    def _filter(self, partition: str | None) -> Any:
        m = self.models
        if partition is None:
            return None
        return m.Filter(must=[m.FieldCondition(key=PARTITION_KEY, match=m.MatchValue(value=partition))])

    def query(self, name: str, vectors: np.ndarray, k: int, partition: str | None,
              id_of: Mapping[str, str] | None = None) -> list[list[Hit]]:
        flt = self._filter(partition)
        requests = [self.models.QueryRequest(query=row, limit=k, with_payload=id_of is None, filter=flt)
                    for row in vectors.tolist()]
        responses = self._call(self.client.query_batch_points, name, requests=requests)
        return [[_hit(p, id_of) for p in r.points] for r in responses]

    def count(self, name: str, partition: str | None) -> int:
        return int(self._call(self.client.count, name, count_filter=self._filter(partition), exact=True).count)

    def scroll(self, name: str, batch: int) -> Iterator[tuple[dict[str, Any], list[float]]]:
        offset = None
        while True:
            records, offset = self._call(self.client.scroll, name, limit=batch, offset=offset, with_payload=True,
                                         with_vectors=True)
            for r in records:
                yield dict(r.payload or {}), list(r.vector)
            if offset is None:
                return

    def partitions(self, name: str) -> list[str]:
        found: set[str] = set()
        offset = None
        while True:  # scroll, not facet: qdrant-client's local mode has no facet
            records, offset = self._call(self.client.scroll, name, limit=10_000, offset=offset,
                                         with_payload=[PARTITION_KEY], with_vectors=False)
            found.update(str(r.payload[PARTITION_KEY]) for r in records if r.payload and PARTITION_KEY in r.payload)
            if offset is None:
                return list(found)

    def ping(self) -> None:
        try:
            self.client.get_collections()
        except Exception as e:
            raise StoreUnavailable(f"Qdrant unreachable: {e}") from e

    def close(self) -> None:
        self.client.close()


def _is_connection_error(e: Exception) -> bool:
    import httpx

    try:
        from qdrant_client.http.exceptions import ResponseHandlingException
    except ImportError:  # pragma: no cover
        ResponseHandlingException = ()  # type: ignore[assignment]  # noqa: N806
    return isinstance(e, (httpx.TransportError, ConnectionError, ResponseHandlingException))
