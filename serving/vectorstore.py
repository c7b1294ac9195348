"""Item and query vectors in Qdrant, partitioned into one physical collection per key (e.g. category).

Why partitions: Qdrant's local (embedded) mode is exact numpy search, and a payload filter there costs
~40x an unfiltered query (STACK.md: 11 ms vs ~500 ms at 50k x 64-d), so "search within a category" is
a search of that category's own collection, never a filter. A logical collection `name` maps to
physical collections `name__<slug(partition)>`, plus `name` itself for unpartitioned data.

Local mode is meant for up to ~20k points per physical collection (`LOCAL_POINT_LIMIT`); beyond that
queries and (on disk) upserts get slow, and the scale path is a Qdrant server (`FASHIONREC_QDRANT_URL`).
"""

from __future__ import annotations

import hashlib
import logging
import re
import uuid
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import numpy as np
from qdrant_client import QdrantClient, models

if TYPE_CHECKING:
    from serving.config import Settings

logger = logging.getLogger(__name__)

# Fixed forever: point ids are uuid5(POINT_NAMESPACE, item id), so changing it re-keys every stored point.
POINT_NAMESPACE = uuid.UUID("6f1c2a9e-3b7d-5e4f-9a0b-8c1d2e3f4a5b")
LOCAL_POINT_LIMIT = 20_000  # qdrant-client's LARGE_DATA_THRESHOLD for local mode
ID_KEY = "id"  # payload key holding the caller's string id
PARTITION_KEY = "partition"  # payload and collection-metadata key holding the partition value
_SEP = "__"
_NAME_RE = re.compile(r"[A-Za-z0-9]+(?:[-_][A-Za-z0-9]+)*")  # no "__", so `name__slug` parses unambiguously
_CLEAN_SLUG_RE = re.compile(r"[a-z0-9]+(?:[-_][a-z0-9]+)*")
_QUERY_CHUNK = 256  # requests per query_batch_points call (one HTTP round trip on a server)


@dataclass(frozen=True, slots=True)
class Hit:
    """One search result: the caller's string id, cosine similarity and stored payload."""

    id: str
    score: float
    payload: dict[str, Any]


def point_id(item_id: str) -> str:
    """Return the deterministic Qdrant point id (a UUID string) for a string id."""
    return str(uuid.uuid5(POINT_NAMESPACE, item_id))


def partition_slug(partition: str) -> str:
    """Return a collection-name-safe slug: the value itself if already clean, else slug plus a short hash."""
    if not partition:
        raise ValueError("partition must be a non-empty string")
    if _CLEAN_SLUG_RE.fullmatch(partition):
        return partition
    # The hash keeps distinct values distinct ("Bags & Luggage" vs "bags-luggage").
    base = re.sub(r"[^a-z0-9]+", "-", partition.lower()).strip("-")[:48].strip("-")
    digest = hashlib.sha1(partition.encode("utf-8")).hexdigest()[:8]
    return f"{base}-{digest}" if base else digest


def collection_name(name: str, partition: str | None = None) -> str:
    """Return the physical collection name for a logical collection and optional partition."""
    if not _NAME_RE.fullmatch(name):
        raise ValueError(f"collection name {name!r} must be alphanumeric words joined by single '-' or '_'")
    return name if partition is None else f"{name}{_SEP}{partition_slug(partition)}"


def _quiet_local_size_warning() -> None:
    """Silence qdrant-client's >20k-points UserWarning; VectorStore logs its own, once per collection."""
    warnings.filterwarnings("ignore", message=r"Local mode is not recommended", category=UserWarning)


class VectorStore:
    """Qdrant wrapper with deterministic ids, cosine collections and per-partition physical collections."""

    def __init__(self, client: QdrantClient, *, local: bool, fast_writes: bool = False) -> None:
        self._client = client
        self._local = local
        self._fast_writes = fast_writes
        self._size_logged: set[str] = set()

    # -- constructors -------------------------------------------------------------------------------

    @classmethod
    def local(cls, path: str | Path, *, fast_writes: bool = False) -> Self:
        """Open embedded Qdrant on disk at `path` (one process at a time: it takes a file lock)."""
        # Stock local storage commits (fsyncs) sqlite once per point: ~1-2 ms/point. `fast_writes`
        # switches each collection's sqlite to WAL + synchronous=NORMAL (~10x faster; survives a process
        # crash, may lose the last writes on power loss). It reaches into qdrant-client internals and
        # silently does nothing if they change.
        _quiet_local_size_warning()
        Path(path).mkdir(parents=True, exist_ok=True)
        return cls(QdrantClient(path=str(path)), local=True, fast_writes=fast_writes)

    @classmethod
    def memory(cls) -> Self:
        """Open embedded, in-memory Qdrant (tests, throwaway indexes)."""
        _quiet_local_size_warning()
        return cls(QdrantClient(location=":memory:"), local=True)

    @classmethod
    def remote(cls, url: str, api_key: str | None = None) -> Self:
        """Connect to a Qdrant server: the path for catalogs beyond local mode's ~20k points per collection."""
        return cls(QdrantClient(url=url, api_key=api_key), local=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        """Pick server mode when `qdrant_url` is set, else local mode at `qdrant_path`."""
        if settings.qdrant_url:
            key = settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None
            return cls.remote(settings.qdrant_url, key)
        assert settings.qdrant_path is not None  # derived from workdir by Settings
        return cls.local(settings.qdrant_path, fast_writes=settings.qdrant_local_fast_writes)

    @property
    def client(self) -> QdrantClient:
        """The underlying qdrant-client, for calls this wrapper does not cover."""
        return self._client

    # -- writes -------------------------------------------------------------------------------------

    def upsert(
        self,
        name: str,
        ids: Sequence[str],
        vectors: np.ndarray,
        payloads: Sequence[Mapping[str, Any]] | None = None,
        partitions: Sequence[str] | None = None,
        batch_size: int = 512,
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
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if n == 0:
            return 0

        groups: dict[str | None, list[int]] = {}
        for i in range(n):
            groups.setdefault(None if partitions is None else partitions[i], []).append(i)

        dim = vectors.shape[1]
        for partition, rows in groups.items():
            physical = collection_name(name, partition)
            self._ensure_collection(physical, dim, name, partition)
            self._tune_local_storage(physical)
            for start in range(0, len(rows), batch_size):
                chunk = rows[start : start + batch_size]
                batch = models.Batch(
                    ids=[point_id(ids[i]) for i in chunk],
                    vectors=vectors[chunk].tolist(),  # (b, d)
                    payloads=[self._payload(ids[i], payloads, i, partition) for i in chunk],
                )
                self._client.upsert(physical, points=batch, wait=True)
            self._log_if_large(physical)
        return n

    def drop(self, name: str) -> int:
        """Delete a logical collection (unpartitioned and every partition); returns collections removed."""
        physical = [c for c in self._physical_names() if c == name or self._is_partition_of(c, name)]
        for c in physical:
            self._client.delete_collection(c)
            self._size_logged.discard(c)
        return len(physical)

    # -- reads --------------------------------------------------------------------------------------

    def search(self, name: str, vectors: np.ndarray, k: int, partition: str | None = None) -> list[list[Hit]]:
        """Return the top-k hits by cosine similarity for each query row, best first."""
        vectors = np.asarray(vectors, dtype=np.float32)  # (B, d)
        if vectors.ndim != 2:
            raise ValueError(f"vectors must be (B, d), got {vectors.shape}")
        if k < 1:
            raise ValueError("k must be >= 1")
        physical = collection_name(name, partition)

        out: list[list[Hit]] = []
        for start in range(0, len(vectors), _QUERY_CHUNK):
            requests = [
                models.QueryRequest(query=row.tolist(), limit=k, with_payload=True)
                for row in vectors[start : start + _QUERY_CHUNK]
            ]
            try:
                responses = self._client.query_batch_points(physical, requests=requests)
            except Exception:
                # Checked only on failure: a server round trip per search is too dear for the happy path.
                if not self._client.collection_exists(physical):
                    raise KeyError(
                        f"no collection {physical!r} (logical {name!r}, partition {partition!r})"
                    ) from None
                raise
            out.extend([self._hit(p) for p in response.points] for response in responses)
        return out

    def count(self, name: str, partition: str | None = None) -> int:
        """Return the number of points in one physical collection (0 if it does not exist)."""
        physical = collection_name(name, partition)
        if not self._client.collection_exists(physical):
            return 0
        return self._client.count(physical, exact=True).count

    def partitions(self, name: str) -> list[str]:
        """Return the partition values of a logical collection, sorted."""
        found = []
        for c in self._physical_names():
            if self._is_partition_of(c, name):
                metadata = self._client.get_collection(c).config.metadata or {}
                found.append(str(metadata.get(PARTITION_KEY, c[len(name) + len(_SEP) :])))
        return sorted(found)

    # -- lifecycle ----------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the client (releases local mode's file lock)."""
        self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------------------------

    def _ensure_collection(self, physical: str, dim: int, name: str, partition: str | None) -> None:
        if self._client.collection_exists(physical):
            params = self._client.get_collection(physical).config.params.vectors
            if isinstance(params, models.VectorParams) and params.size == dim:
                return
            old = params.size if isinstance(params, models.VectorParams) else params
            logger.warning("recreating %s: vector size %s -> %d drops its points", physical, old, dim)
            self._client.delete_collection(physical)
            self._size_logged.discard(physical)
        self._client.create_collection(
            physical,
            vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE),
            metadata={"logical": name, PARTITION_KEY: partition},
        )

    def _tune_local_storage(self, physical: str) -> None:
        if not (self._local and self._fast_writes):
            return
        try:  # private: QdrantClient._client is QdrantLocal; .storage is CollectionPersistence
            connection = self._client._client.collections[physical].storage.storage
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
        except (AttributeError, KeyError):
            logger.debug("fast_writes unavailable for %s with this qdrant-client", physical)

    def _log_if_large(self, physical: str) -> None:
        if not self._local or physical in self._size_logged:
            return
        n = self._client.count(physical, exact=True).count
        if n > LOCAL_POINT_LIMIT:
            self._size_logged.add(physical)
            logger.warning(
                "%s holds %d points, above local mode's %d: queries are exact numpy scans; "
                "partition it further or set FASHIONREC_QDRANT_URL to use a server",
                physical,
                n,
                LOCAL_POINT_LIMIT,
            )

    def _physical_names(self) -> list[str]:
        return [c.name for c in self._client.get_collections().collections]

    @staticmethod
    def _is_partition_of(physical: str, name: str) -> bool:
        prefix = name + _SEP
        return physical.startswith(prefix) and _CLEAN_SLUG_RE.fullmatch(physical[len(prefix) :]) is not None

    @staticmethod
    def _payload(
        item_id: str, payloads: Sequence[Mapping[str, Any]] | None, i: int, partition: str | None
    ) -> dict[str, Any]:
        payload = dict(payloads[i]) if payloads is not None else {}
        payload[ID_KEY] = item_id  # ours wins over a caller's "id"
        if partition is not None:
            payload[PARTITION_KEY] = partition
        return payload

    @staticmethod
    def _hit(point: models.ScoredPoint) -> Hit:
        payload = dict(point.payload or {})
        return Hit(id=str(payload.get(ID_KEY, point.id)), score=float(point.score), payload=payload)
