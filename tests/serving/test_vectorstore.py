"""VectorStore against both real engines: Qdrant Edge (in memory and on disk) and qdrant-client's local mode.

qdrant-client's local mode runs the same client calls as a Qdrant server, so the server path is tested here too.
"""

import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from serving.config import Settings
from serving.vectorstore import POINT_NAMESPACE, Hit, StoreUnavailable, VectorStore, point_id


@pytest.fixture(params=["edge-memory", "edge-path", "client-local"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorStore]:
    if request.param == "edge-memory":
        s = VectorStore.memory()
    elif request.param == "edge-path":
        s = VectorStore.local(tmp_path / "qdrant")
    else:
        s = VectorStore.client_local(":memory:")
    yield s
    s.close()


def _unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.normal(size=(n, d)).astype(np.float32)  # (n, d)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _exact_topk(items: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    sims = queries @ items.T  # (B, n), rows are unit norm so this is cosine
    top = np.argsort(-sims, axis=1)[:, :k]  # (B, k)
    return top, np.take_along_axis(sims, top, axis=1)


# -- ids and names ----------------------------------------------------------------------------------


def test_point_id_is_uuid5_of_fixed_namespace() -> None:
    assert point_id("B000123") == str(uuid.uuid5(POINT_NAMESPACE, "B000123"))
    # Pinned: a changed namespace would orphan every point already stored.
    assert point_id("B000123") == "a72ebcbc-a61a-5f3a-b116-b37edeae8f0a"
    assert point_id("B000123") != point_id("B000124")


def test_stored_point_ids_are_deterministic(tmp_path: Path) -> None:
    import qdrant_edge as qe

    with VectorStore.local(tmp_path / "q") as store:
        store.upsert("items", ["x1", "x2"], np.eye(2, 4, dtype=np.float32), [{"title": "a"}, {"title": "b"}])
    shard = qe.EdgeShard.load(str(tmp_path / "q" / "items" / "shard"))
    records = shard.retrieve([point_id("x1"), point_id("x2")], True, False)
    shard.close()
    assert sorted(r.payload["id"] for r in records) == ["x1", "x2"]
    assert {str(r.id) for r in records} == {point_id("x1"), point_id("x2")}


def test_collection_names_are_checked(store: VectorStore) -> None:
    with pytest.raises(ValueError):
        store.upsert("bad name", ["a"], np.ones((1, 4)))
    with pytest.raises(ValueError):
        store.upsert("../escape", ["a"], np.ones((1, 4)))
    with pytest.raises(ValueError):
        store.upsert("items", ["a"], np.ones((1, 4)), partitions=[""])


# -- upsert -----------------------------------------------------------------------------------------


def test_upsert_is_idempotent_and_replaces_vectors(store: VectorStore) -> None:
    rng = np.random.default_rng(0)
    ids = [f"item{i}" for i in range(60)]
    vecs = _unit_rows(rng, 60, 8)
    payloads = [{"item_id": i, "title": f"t{i}"} for i in ids]
    assert store.upsert("items", ids, vecs, payloads, batch_size=16) == 60
    store.upsert("items", ids, vecs, payloads, batch_size=7)
    assert store.count("items") == 60

    # Replace item0's vector with item59's direction: item0 now ties item59 at score 1.
    moved = vecs.copy()
    moved[0] = vecs[59]
    store.upsert("items", ids[:1], moved[:1], [{"item_id": "item0", "title": "new"}])
    assert store.count("items") == 60
    [hits] = store.search("items", vecs[59:60], k=2)
    assert {h.id for h in hits} == {"item0", "item59"}
    assert all(h.score == pytest.approx(1.0, abs=1e-5) for h in hits)
    assert next(h for h in hits if h.id == "item0").payload["title"] == "new"


def test_upsert_validates_shapes(store: VectorStore) -> None:
    with pytest.raises(ValueError):
        store.upsert("items", ["a", "b"], np.ones((3, 4)))
    with pytest.raises(ValueError):
        store.upsert("items", ["a"], np.ones((1, 4)), payloads=[{}, {}])
    with pytest.raises(ValueError):
        store.upsert("items", ["a"], np.ones((1, 4)), partitions=["x", "y"])


def test_dimension_change_recreates_collection(store: VectorStore) -> None:
    store.upsert("items", ["a", "b"], np.ones((2, 4)))
    store.upsert("items", ["c"], np.ones((1, 6)))
    assert store.count("items") == 1
    [hits] = store.search("items", np.ones((1, 6)), k=5)
    assert [h.id for h in hits] == ["c"]


# -- search -----------------------------------------------------------------------------------------


def test_search_matches_exact_numpy_cosine_topk(store: VectorStore) -> None:
    rng = np.random.default_rng(1)
    n, d, k = 300, 16, 10
    items = rng.normal(size=(n, d)).astype(np.float32) * rng.uniform(0.5, 3, size=(n, 1))  # not unit norm
    ids = [f"p{i}" for i in range(n)]
    store.upsert("items", ids, items)
    queries = rng.normal(size=(12, d)).astype(np.float32)  # (B, d)

    unit = items / np.linalg.norm(items, axis=1, keepdims=True)
    q_unit = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    top, scores = _exact_topk(unit, q_unit, k)

    results = store.search("items", queries, k=k)
    assert len(results) == len(queries)
    for hits, want_idx, want_scores in zip(results, top, scores, strict=True):
        assert [h.id for h in hits] == [ids[i] for i in want_idx]
        np.testing.assert_allclose([h.score for h in hits], want_scores, atol=1e-5)


def test_search_returns_payload_and_best_first(store: VectorStore) -> None:
    store.upsert(
        "items",
        ["near", "far"],
        np.array([[1.0, 0.1], [0.0, 1.0]]),
        [{"title": "Red boot", "category": "shoes"}, {"title": "Blue bag", "category": "bags"}],
    )
    [hits] = store.search("items", np.array([[1.0, 0.0]]), k=2)
    assert [h.id for h in hits] == ["near", "far"]
    assert hits[0].score > hits[1].score
    assert hits[0].payload == {"id": "near", "title": "Red boot", "category": "shoes"}
    assert isinstance(hits[0], Hit)


def test_search_missing_collection_raises(store: VectorStore) -> None:
    with pytest.raises(KeyError):
        store.search("items", np.ones((1, 4)), k=3)
    assert store.count("items") == 0


# -- partitions -------------------------------------------------------------------------------------


def _partitioned(store: VectorStore) -> tuple[list[str], np.ndarray, list[str]]:
    rng = np.random.default_rng(2)
    cats = ["shoes", "Bags & Luggage", "jewelry"]
    ids = [f"{c[:3]}{i}" for c in cats for i in range(30)]
    parts = [c for c in cats for _ in range(30)]
    vecs = _unit_rows(rng, len(ids), 8)
    store.upsert("items", ids, vecs, [{"category": p} for p in parts], partitions=parts)
    return ids, vecs, parts


def test_partitions_do_not_leak(store: VectorStore) -> None:
    ids, vecs, parts = _partitioned(store)
    assert store.partitions("items") == sorted(["shoes", "Bags & Luggage", "jewelry"])
    assert [store.count("items", p) for p in ("shoes", "Bags & Luggage", "jewelry")] == [30, 30, 30]
    assert store.count("items") == 90  # one collection holds every partition

    # Query with every item's own vector, in every partition: only that partition's items come back,
    # and the item itself is the top hit exactly when it lives there.
    for p in ("shoes", "Bags & Luggage", "jewelry"):
        results = store.search("items", vecs, k=30, partition=p)
        for hits, own_id, own_part in zip(results, ids, parts, strict=True):
            assert len(hits) == 30
            assert {h.payload["category"] for h in hits} == {p}
            assert {h.payload["partition"] for h in hits} == {p}
            assert (hits[0].id == own_id) == (own_part == p)
    [unfiltered] = store.search("items", vecs[:1], k=90)
    assert sorted(h.id for h in unfiltered) == sorted(ids)

    with pytest.raises(KeyError):
        store.search("items", vecs[:1], k=3, partition="hats")
    with pytest.raises(ValueError):
        store.search("items", np.ones((1, 3)), k=3)  # wrong dimension


def test_partition_topk_matches_exact_within_partition(store: VectorStore) -> None:
    ids, vecs, parts = _partitioned(store)
    mask = np.array([p == "jewelry" for p in parts])
    sub_ids = [i for i, m in zip(ids, mask, strict=True) if m]
    queries = _unit_rows(np.random.default_rng(3), 5, 8)
    top, _ = _exact_topk(vecs[mask], queries, 5)
    results = store.search("items", queries, k=5, partition="jewelry")
    assert [[h.id for h in hits] for hits in results] == [[sub_ids[i] for i in row] for row in top]


def test_export_round_trips_between_engines(store: VectorStore) -> None:
    ids, vecs, parts = _partitioned(store)
    got_ids, got_vecs, payloads = store.export("items", batch=7)
    order = np.argsort(got_ids)
    assert sorted(got_ids) == sorted(ids)
    want = dict(zip(ids, vecs, strict=True))
    np.testing.assert_allclose(got_vecs[order], np.stack([want[i] for i in sorted(ids)]), atol=1e-6)
    assert {p["partition"] for p in payloads} == set(parts) and all("id" not in p for p in payloads)
    with VectorStore.client_local() as other:  # a copy in the other engine answers the same searches
        other.upsert("items", got_ids, got_vecs, payloads, partitions=[p["partition"] for p in payloads])
        q = vecs[:3]
        assert [[h.id for h in r] for r in other.search("items", q, 5, partition="shoes")] == \
            [[h.id for h in r] for r in store.search("items", q, 5, partition="shoes")]


def test_drop_removes_only_that_collection(store: VectorStore) -> None:
    _partitioned(store)
    store.upsert("other", ["o"], np.ones((1, 8)))
    assert store.collections() == ["items", "other"]
    assert store.drop("items") == 1
    assert store.drop("items") == 0
    assert store.partitions("items") == []
    assert store.count("items") == 0
    assert store.count("other") == 1


# -- local (Edge) specifics -------------------------------------------------------------------------


def test_local_path_persists_across_reopen(tmp_path: Path) -> None:
    vecs = _unit_rows(np.random.default_rng(4), 4, 8)
    with VectorStore.local(tmp_path / "q") as s:
        s.upsert("items", ["a", "b", "c", "d"], vecs, partitions=["Shoes & Co", "Shoes & Co", "bags", "bags"])
    with VectorStore.local(tmp_path / "q") as s:
        assert s.engine == "qdrant-edge"
        assert s.partitions("items") == ["Shoes & Co", "bags"]
        assert s.count("items", "Shoes & Co") == 2
        [hits] = s.search("items", vecs[2:3], k=1, partition="bags")
        assert hits[0].id == "c"


def test_second_process_gets_a_clear_lock_error(tmp_path: Path) -> None:
    import subprocess
    import sys

    with VectorStore.local(tmp_path / "q") as s:
        s.upsert("items", ["a"], np.ones((1, 4)))
        code = ("import sys; import numpy as np; from serving.vectorstore import VectorStore, StoreUnavailable\n"
                "s = VectorStore.local(sys.argv[1])\n"
                "try:\n    s.search('items', np.ones((1, 4)), 1)\n"
                "except StoreUnavailable as e:\n    print(e); sys.exit(3)\n")
        out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "q")], capture_output=True, text=True,
                             cwd=Path(__file__).parents[2])
    assert out.returncode == 3, out.stderr
    assert "open in another process" in out.stdout


def test_memory_store_removes_its_directory_and_refuses_after_close() -> None:
    s = VectorStore.memory()
    s.upsert("items", ["a"], np.ones((1, 4)))
    root = s._backend.root
    assert root.is_dir()
    s.ping()
    s.close()
    assert not root.exists()
    with pytest.raises(StoreUnavailable):
        s.ping()


# -- settings wiring --------------------------------------------------------------------------------


def test_from_settings_local_uses_derived_path(tmp_path: Path) -> None:
    settings = Settings(workdir=tmp_path)
    with VectorStore.from_settings(settings) as s:
        s.upsert("items", ["a"], np.ones((1, 4)))
    assert (tmp_path / "qdrant" / "items" / "collection.json").is_file()


def test_from_settings_with_url_goes_remote() -> None:
    calls: list[tuple[str, str | None]] = []

    class RecordingStore(VectorStore):
        @classmethod
        def remote(cls, url: str, api_key: str | None = None) -> "RecordingStore":
            calls.append((url, api_key))
            return cls.memory()

    settings = Settings(qdrant_url="http://qdrant:6333", qdrant_api_key="s3cret")
    RecordingStore.from_settings(settings).close()
    assert calls == [("http://qdrant:6333", "s3cret")]
