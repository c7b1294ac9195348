"""Dagster resources: where the input data is, where a run writes, and the Feast store over that workdir."""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource

from feature_repo.layout import Layout
from feature_repo.loaders import FORMATS, SAMPLE_DIR
from feature_repo.splits import DEFAULT_MAX_TEST_TARGETS, DEFAULT_REFIT_DAYS, ROLLING_EPOCHS
from feature_repo.store import FeatureRepo
from models.llm.prompt import LIMITS
from serving.config import COLLECTIONS


class DatasetResource(ConfigurableResource):
    """The input dataset: a folder in one of the supported formats (default: the bundled sample)."""

    data_dir: str = str(SAMPLE_DIR)
    format: str = "canonical"

    @property
    def path(self) -> Path:
        if self.format not in FORMATS:
            raise ValueError(f"unknown format {self.format!r}; expected one of {FORMATS}")
        return Path(self.data_dir)


class ProtocolResource(ConfigurableResource):
    """The evaluation protocol: "temporal" (global cut dates, the default) or "loo" (the paper's leave-one-out)."""

    protocol: str = "temporal"
    val_frac: float = 0.1  # temporal: the validation window, as a share of the time span
    test_frac: float = 0.1  # temporal: the test window (the last share of the time span)
    refit_every_days: float = DEFAULT_REFIT_DAYS  # temporal: the ID model's rolling refits through the test window (0: one)
    # Evaluation's seeded sample of the test targets (feature_repo.splits.with_test_sample; 0: every one), so that its
    # targets x catalog cost stays linear in the data
    max_test_targets: int = DEFAULT_MAX_TEST_TARGETS


class LLMResource(ConfigurableResource):
    """The LLM stage: base model and the CPU budgets (seeded samples of prompts and targets)."""

    model: str = "smollm2-135m"  # tiny | smollm2-135m | a Hugging Face causal LM name or path (local files)
    train_prompts: int = 16  # validation targets turned into training prompts
    eval_targets: int = 16  # seeded sample of test targets for the llm-* and ranker-llm rows
    rank_train_targets: int = 32  # validation lists (not in the LLM's training prompts) ranker-llm's 2nd pass fits on
    max_train_seconds: float = 60.0  # fine-tuning stops after this much time
    lr: float = 2e-4  # the paper's 2e-5 barely moves a 135M model in a CPU budget of steps
    batch_size: int = 4  # prompts per training step
    infer_batch_size: int = 8  # prompts per generation batch (decoding is memory-bound: a batch shares each step's
    # weight reads; 8 measured best on torch-bf16); a CPU scores candidate prompts one at a time
    budget_tokens: int = LIMITS.budget_tokens
    candidates: int = LIMITS.candidates
    permutations: int = 1  # candidate display orders averaged at evaluation
    high_share: float = 0.2
    format_check: int = 4  # validation targets beyond train_prompts whose generation prompts are held out of
    # training: the adapter's format-violation rate is measured on them before and after fine-tuning
    max_new_tokens: int = LIMITS.max_new_tokens
    constrained: bool = False  # catalog-constrained decoding of the generated ID
    engine: str = "auto"  # auto (torch-bf16 on CPUs with native bf16, else ctranslate2) | ctranslate2 (llm_engine,
    # int8) | torch-bf16 | torch (fp32)
    seed: int = 0


class WorkdirResource(ConfigurableResource):
    """Everything a run writes lives under this folder (named paths: `layout`, `feature_repo.layout.Layout`)."""

    workdir: str = "work"
    inbox: str | None = None  # incremental batches land here; default <workdir>/inbox

    @property
    def root(self) -> Path:
        return Path(self.workdir).resolve()

    @property
    def layout(self) -> Layout:
        return Layout(self.root)

    @property
    def inbox_dir(self) -> Path:
        return Path(self.inbox).resolve() if self.inbox else self.layout.inbox

    def path(self, *parts: str) -> Path:
        """A path under the workdir, its parent folder created."""
        return Layout.ensure(self.root.joinpath(*parts))

    @property
    def canonical(self) -> Path:
        return self.layout.canonical

    def items(self):  # noqa: ANN201
        """The canonical catalog alone (the other tables are large and most assets need only this)."""
        return self.layout.read_items()

    def catalog(self):  # noqa: ANN201
        """The evaluation catalog (items sorted by id, rows per category)."""
        from models.catalog import Catalog

        return Catalog.from_items(self.items())

    @property
    def features(self) -> Path:
        return self.layout.features

    @property
    def eval(self) -> Path:
        return self.layout.eval


class FeastResource(ConfigurableResource):
    """Feast over `<workdir>/features`: the DuckDB offline store (or Spark); online SQLite under `<workdir>/feast`, or Redis."""

    workdir: str = "work"
    online_items: bool = False  # see feature_repo.definitions.build_definitions
    online_store: str = "sqlite"  # sqlite | redis://host:port[/db] (serving.config.Settings.online_store)
    offline_store: str = "duckdb"  # duckdb | spark (serving.config.Settings.offline_store)

    def repo(self) -> FeatureRepo:
        layout = Layout(Path(self.workdir).resolve())
        return FeatureRepo(feature_dir=layout.features, feast_dir=layout.feast, online_items=self.online_items,
                           online_store=self.online_store, offline_store=self.offline_store)


class TrainingResource(ConfigurableResource):
    """Training settings shared by the sequential models (run-level overrides from the CLI)."""

    epochs: int = 10  # `fashionrec run --epochs` has the same default
    patience: int = 3
    batch_size: int = 256
    max_len: int = 20
    dim: int = 64
    min_count: int = 2  # items seen fewer times in training share the cold embedding
    rolling_models: list[str] = ["core-trm"]  # refitted at each rolling refit (ProtocolResource.refit_every_days)
    rolling_epochs: int = ROLLING_EPOCHS  # epochs of each warm-started rolling refit (`fashionrec run --rolling-epochs`)
    title_epochs: int = 5  # LSTM title encoder (models.text.TitleTrainConfig.epochs)
    title_include_clicks: bool = False  # title pairs from clicks too (the paper: purchases only)
    device: str = "auto"
    seed: int = 0
    progress: bool = True
    # The share of users whose data trains the models (the paper's low-resource setting; `fashionrec run
    # --user-share`): their training events and validation targets; every user's test targets are evaluated.
    user_share: float = 1.0
    # The ID models' loss: 0 a full softmax over the item vocabulary; N a sampled softmax over N shared negatives
    # per batch, whose cost grows with N, not the catalog; None (auto) the full softmax up to 16,384 items and 1,024
    # sampled negatives above (models.seqrec.train.TrainConfig.negatives_for; `fashionrec run --sampled-negatives`).
    sampled_negatives: int | None = None

    def train_config(self):  # noqa: ANN201
        from models.seqrec import TrainConfig

        return TrainConfig(epochs=self.epochs, patience=self.patience, batch_size=self.batch_size,
                           device=self.device, seed=self.seed, progress=self.progress,
                           sampled_negatives=self.sampled_negatives)

    def model_overrides(self) -> dict:
        return {"max_len": self.max_len, "dim": self.dim}


class QdrantResource(ConfigurableResource):
    """Qdrant: the embedded Qdrant Edge engine under `<workdir>/qdrant` by default, a server when `url` is set."""

    workdir: str = "work"
    url: str | None = None
    api_key: str | None = None
    id_collection: str = COLLECTIONS.ids
    title_collection: str = COLLECTIONS.titles
    memory_collection: str = COLLECTIONS.memory

    @property
    def collections(self):  # noqa: ANN201
        from serving.config import Collections

        return Collections(self.id_collection, self.title_collection, self.memory_collection)

    def store(self):  # noqa: ANN201
        from serving.vectorstore import VectorStore

        if self.url:
            return VectorStore.remote(self.url, api_key=self.api_key)
        return VectorStore.local(Layout(Path(self.workdir).resolve()).qdrant)
