"""Serving settings: paths, URLs and collection names, read from `FASHIONREC_*` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Infrastructure settings for serving; every field maps to `FASHIONREC_<FIELD>`."""

    model_config = SettingsConfigDict(env_prefix="FASHIONREC_", extra="ignore")

    workdir: Path = Path("./work")

    # Qdrant: a URL selects the server (the scale path); without one, embedded local mode at `qdrant_path`.
    qdrant_url: str | None = None
    qdrant_path: Path | None = None  # None: derived as <workdir>/qdrant
    qdrant_api_key: SecretStr | None = None
    # Local mode only: sqlite WAL + synchronous=NORMAL, ~10x faster upserts; see VectorStore.local.
    qdrant_local_fast_writes: bool = False

    id_collection: str = "item_id_embeddings"
    title_collection: str = "item_title_embeddings"
    memory_collection: str = "query_memory"

    feast_repo_path: Path | None = None
    llm_model: str | None = None  # name or local path of a Hugging Face causal LM

    @model_validator(mode="after")
    def _derive_paths(self) -> Settings:
        """Fill `qdrant_path` from `workdir` when it is not set explicitly."""
        if self.qdrant_path is None:
            self.qdrant_path = self.workdir / "qdrant"
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the process-wide settings, read once from the environment."""
    return Settings()
