"""Settings read from FASHIONREC_* environment variables."""

from pathlib import Path

import pytest

from serving.config import COLLECTIONS, Settings


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("WORKDIR", "QDRANT_URL", "QDRANT_PATH", "LLM_MODEL", "ID_COLLECTION"):
        monkeypatch.delenv(f"FASHIONREC_{var}", raising=False)
    s = Settings()
    assert s.workdir == Path("./work")
    assert s.qdrant_path == Path("./work/qdrant")
    assert s.qdrant_url is None and s.qdrant_api_key is None and s.llm_model is None
    assert (s.id_collection, s.title_collection, s.memory_collection) == (
        "item_id_embeddings",
        "item_title_embeddings",
        "query_memory",
    )


def test_environment_with_prefix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FASHIONREC_WORKDIR", str(tmp_path))
    monkeypatch.setenv("FASHIONREC_QDRANT_URL", "http://qdrant:6333")
    monkeypatch.setenv("FASHIONREC_QDRANT_API_KEY", "k")
    monkeypatch.setenv("FASHIONREC_ID_COLLECTION", "ids_v2")
    monkeypatch.setenv("FASHIONREC_LLM_MODEL", "tiiuae/falcon-7b")
    monkeypatch.setenv("WORKDIR", "/not/used")  # unprefixed names are ignored
    s = Settings()
    assert s.workdir == tmp_path
    assert s.qdrant_path == tmp_path / "qdrant"
    assert s.qdrant_url == "http://qdrant:6333"
    assert s.qdrant_api_key is not None and s.qdrant_api_key.get_secret_value() == "k"
    assert "k'" not in repr(s)  # the key is masked
    assert s.id_collection == "ids_v2"
    assert s.llm_model == "tiiuae/falcon-7b"


def test_explicit_qdrant_path_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FASHIONREC_QDRANT_PATH", str(tmp_path / "elsewhere"))
    assert Settings(workdir=tmp_path).qdrant_path == tmp_path / "elsewhere"


def test_settings_pass_to_a_child_process_unchanged(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`env()` is what `fashionrec serve --workers N` hands its workers: read back, it is the same settings."""
    s = Settings(workdir=tmp_path, qdrant_url="http://q:6333", qdrant_api_key="secret", llm_enabled=False, port=9001)
    for key, value in s.env().items():
        monkeypatch.setenv(key, value)
    back = Settings()
    assert back.model_dump() == s.model_dump()
    assert back.api_key == "secret" and back.llm_enabled is False and back.port == 9001
    assert s.collections == COLLECTIONS and s.collections.names() == (
        "item_id_embeddings", "item_title_embeddings", "query_memory")
