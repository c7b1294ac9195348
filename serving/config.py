"""Serving settings: one pydantic Settings class, every field read from a `FASHIONREC_<FIELD>` environment variable."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Infrastructure and service settings; every field maps to `FASHIONREC_<FIELD>` (e.g. FASHIONREC_PORT)."""

    model_config = SettingsConfigDict(env_prefix="FASHIONREC_", extra="ignore")

    workdir: Path = Path("./work")

    # Qdrant: a URL selects the server (the scale path); without one, the embedded Qdrant Edge engine at `qdrant_path`.
    qdrant_url: str | None = None
    qdrant_path: Path | None = None  # None: derived as <workdir>/qdrant
    qdrant_api_key: SecretStr | None = None

    id_collection: str = "item_id_embeddings"
    title_collection: str = "item_title_embeddings"
    memory_collection: str = "query_memory"

    # Feast online store: "sqlite" (under <workdir>/feast) or redis://host:port[/db].
    online_store: str = "sqlite"
    feature_service: str = "prompt_context_v1"

    # The retrieval path
    id_model: str = "core-trm"  # the ID checkpoint <workdir>/models/<id_model>.pt
    retrieval_mode: str = "mixup"  # mixup | title_only | id_only | rrf (how the ID and title lists combine)
    ranker_enabled: bool = True  # order with the learned ranking stage when the bundle has one (else mixup + variants)
    mixup_n: int = 1

    # The LLM stage: base model name or path (None: the adapter's own base), and its time budget per request
    llm_model: str | None = None
    llm_enabled: bool = True  # load the adapter at start-up when the workdir has one
    llm_timeout_s: float = Field(default=20.0, gt=0)
    llm_max_new_tokens: int = Field(default=40, ge=8, le=128)
    llm_constrained: bool = True  # generation limited to the category's item ids (every answer a real item)
    llm_candidates: int = Field(default=20, ge=2, le=20)
    llm_budget_tokens: int = Field(default=1024, ge=128)

    # The HTTP service
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = Field(default=1, ge=1)
    max_query_chars: int = Field(default=200, ge=1)  # longer queries are cut to this (after removing controls)
    max_batch: int = Field(default=256, ge=1)
    retry_after_s: int = Field(default=5, ge=1)  # the Retry-After of a 503
    log_requests: bool = True
    swap_check_s: float = Field(default=1.0, ge=0)  # how often requests look at the registry's `current` pointer
    # torch intra-op threads in the service process. 1 keeps each request's small forwards (the ID model's sequence
    # vector, the title encoder) from fighting over cores with concurrent requests; the LLM modes would use more.
    torch_threads: int | None = Field(default=1, ge=1)

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
