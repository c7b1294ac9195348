"""The platform's one settings object: every field read from a `FASHIONREC_<FIELD>` environment variable.

`Settings()` is read by the HTTP service, by `fashionrec` commands and by the Dagster definitions (the UI's runs),
so an infrastructure setting such as the Qdrant URL and key is honoured on every path. Model sizes are not here:
they are frozen dataclasses beside their models (`models.llm.prompt.LIMITS`, `RetrievalConfig`, ...), and the
settings and Dagster resources take their defaults from those. The vector collections' names are `COLLECTIONS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from models.llm.prompt import LIMITS
from models.seqrec import ID_MODEL


@dataclass(frozen=True)
class Collections:
    """The names of the three vector collections (one point per catalog item, or per stored query)."""

    ids: str = "item_id_embeddings"  # the ID model's item table
    titles: str = "item_title_embeddings"  # the title model's embedding of every item
    memory: str = "query_memory"  # the query-product memory's keys

    def names(self) -> tuple[str, str, str]:
        return self.ids, self.titles, self.memory


COLLECTIONS = Collections()


class Settings(BaseSettings):
    """Paths, stores, URLs and service limits; every field maps to `FASHIONREC_<FIELD>` (e.g. FASHIONREC_PORT)."""

    model_config = SettingsConfigDict(env_prefix="FASHIONREC_", extra="ignore")

    workdir: Path = Path("./work")
    inbox: Path | None = None  # incremental batches (default <workdir>/inbox)

    # What a run reads (the Dagster UI's runs; `fashionrec run` takes them as options).
    data: Path | None = None  # the dataset folder (None: the bundled sample)
    format: str = "canonical"  # canonical | hm | amazon2018
    protocol: str = "temporal"  # temporal | loo

    # Qdrant: a URL selects the server (the scale path); without one, the embedded Qdrant Edge engine at `qdrant_path`.
    qdrant_url: str | None = None
    qdrant_path: Path | None = None  # None: derived as <workdir>/qdrant
    qdrant_api_key: SecretStr | None = None

    id_collection: str = COLLECTIONS.ids
    title_collection: str = COLLECTIONS.titles
    memory_collection: str = COLLECTIONS.memory

    # Feast online store: "sqlite" (under <workdir>/feast) or redis://host:port[/db].
    online_store: str = "sqlite"
    # Feast's offline store for the point-in-time joins of the asset graph: duckdb (in process) or spark (the `spark`
    # extra; local mode here, a cluster through `feature_repo.store.SPARK_CONF`'s spark.master)
    offline_store: Literal["duckdb", "spark"] = "duckdb"
    feature_service: str = "prompt_context_v1"

    # The retrieval path
    id_model: str = ID_MODEL  # the ID checkpoint models/<id_model>.pt of the bundle
    retrieval_mode: str = "mixup"  # mixup | title_only | id_only | rrf (how the ID and title lists combine)
    ranker_enabled: bool = True  # order with the learned ranking stage when the bundle has one (else mixup + variants)
    # The ranker's boosters compiled to native code (lleaves; the same scores as LightGBM's, 4-5x faster), cached
    # in $FASHIONREC_CACHE/ranker. "background": a bundle whose compiled code is not cached yet serves with
    # LightGBM's predict while it compiles (tens of seconds a booster), then switches; "wait": compile before ready;
    # "off": LightGBM's predict only.
    ranker_compile: Literal["background", "wait", "off"] = "background"
    # On the embedded engine, search the ID and title lists by scanning the bundle's tables in process (the same
    # vectors as their collections; exact; one BLAS product per request, 4x faster than the engine's own exact
    # search); False: search the collections. With a Qdrant server (`qdrant_url`) the collections are searched.
    table_search: bool = True
    mixup_n: int = 1

    # The LLM stage: base model name or path (None: the adapter's own base), and its time budget per request
    llm_model: str | None = None
    llm_enabled: bool = True  # load the adapter at start-up when the bundle has one
    llm_background: bool = True  # load it in a thread: ready for retrieval at once, LLM modes fall back until loaded
    llm_timeout_s: float = Field(default=20.0, gt=0)
    llm_max_new_tokens: int = Field(default=LIMITS.max_new_tokens, ge=8, le=128)
    llm_constrained: bool = True  # generation limited to the category's item ids (every answer a real item)
    llm_candidates: int = Field(default=LIMITS.candidates, ge=2, le=LIMITS.candidates)
    llm_budget_tokens: int = Field(default=LIMITS.budget_tokens, ge=128)
    # auto: torch-bf16 on a CPU with native bf16 (AVX512-BF16, AMX), else ctranslate2; ctranslate2: the bundle's
    # converted model (models/llm_engine) when it matches the adapter, else torch with a warning (constrained
    # generation redoes off-catalog answers on torch); torch-bf16: the adapter merged, bf16 weights; torch: fp32.
    llm_engine: Literal["auto", "ctranslate2", "torch-bf16", "torch"] = "auto"

    # The HTTP service (`fashionrec serve` binds host:port with this many worker processes)
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    workers: int = Field(default=1, ge=1)
    max_query_chars: int = Field(default=200, ge=1)  # longer queries are cut to this (after removing controls)
    max_batch: int = Field(default=256, ge=1)
    retry_after_s: int = Field(default=5, ge=1)  # the Retry-After of a 503
    log_requests: bool = True
    swap_check_s: float = Field(default=1.0, ge=0)  # how often requests look at the registry's `current` pointer
    # torch intra-op and BLAS threads in the service process. 1 keeps each request's small forwards (the ID model's
    # sequence vector, the title encoder) and products (the title scan) from fighting over cores with concurrent
    # requests and the other workers; the LLM modes would use more.
    torch_threads: int | None = Field(default=1, ge=1)
    # Requests run once per category (up to this many) on every bundle before it serves or `/readyz` says ready,
    # so the first real request does not pay for lazy loading. 0 turns the warm-up off (ready at once).
    warm_up_categories: int = Field(default=16, ge=0)

    @model_validator(mode="after")
    def _derive_paths(self) -> Settings:
        """Fill `qdrant_path` from `workdir` when it is not set explicitly."""
        if self.qdrant_path is None:
            self.qdrant_path = self.workdir / "qdrant"
        return self

    @property
    def collections(self) -> Collections:
        return Collections(self.id_collection, self.title_collection, self.memory_collection)

    @property
    def api_key(self) -> str | None:
        """The Qdrant API key in clear, for the client (None without one)."""
        return self.qdrant_api_key.get_secret_value() if self.qdrant_api_key else None

    def env(self) -> dict[str, str]:
        """These settings as `FASHIONREC_*` variables, for a child process (uvicorn's workers, `dagster dev`)."""
        out = {}
        for name, value in self.model_dump().items():
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            out[f"FASHIONREC_{name.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
        return out
