"""Where everything lives under a workdir, named once; a serving bundle uses the same relative paths.

Every layer reads and writes through these names (`Layout(root).eval_targets`, `Layout(root).model("core-trm")`)
instead of path literals, so moving a file is a change here. The split loaders read the evaluation targets
(`val_targets`, `test_targets`): the targets joined with their histories by Feast's point-in-time join.

Models are fitted twice (`feature_repo.splits`, "Two fits"): the *val* fit on what came before the validation
targets (model selection, and the variant ranker, the learned ranker and the LLM are trained on its lists), and the
*test* fit, refitted on everything before the test targets with the selected settings (it scores the test targets
and is what a bundle serves). `Layout(root)` names the test fit's files; `Layout(root).at("val")` names the val
fit's, under `models/val/` and `text/val/`. Every data path is the same for both.

With rolling refits (`feature_repo.splits`, "Rolling refits") the test period has several ID-model fits:
`Layout(root)` names the last (what a bundle serves), `Layout(root).refit(k)` the k-th, under `models/refits/<k>/`
(its training sequences under `seqrec/refits/<k>/`). The title model is fitted once per period: every refit layout
names the same title files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import pandas as pd

Period = Literal["val", "test"]
PERIODS: tuple[Period, ...] = ("val", "test")


@dataclass(frozen=True)
class Layout:
    """The named paths under one root (a workdir or a bundle version); nothing is created until `ensure` is called."""

    root: Path
    period: Period = "test"  # which fit the model paths name (see the module docstring)
    refit_k: int | None = None  # test period: the k-th rolling refit's ID model (None: the last, `models/<name>.pt`)

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))
        if self.period not in PERIODS:
            raise ValueError(f"unknown period {self.period!r}; expected one of {PERIODS}")

    def at(self, period: Period) -> Layout:
        """The same root, naming the `period` fit's model files."""
        return replace(self, period=period, refit_k=None)

    def refit(self, k: int) -> Layout:
        """The same root, naming the k-th rolling refit's ID-model files (test period; 0 is the fit at the test cut)."""
        if k < 0:
            raise ValueError(f"refit index must be >= 0, got {k}")
        return replace(self, period="test", refit_k=k)

    # -- folders ---------------------------------------------------------------------------------------
    @property
    def canonical(self) -> Path:
        """The validated canonical tables, their quarantine and the ingest reports."""
        return self.root / "canonical"

    @property
    def features(self) -> Path:
        """The feature parquet files Feast reads."""
        return self.root / "features"

    @property
    def feast(self) -> Path:
        """Feast's registry and SQLite online store."""
        return self.root / "feast"

    @property
    def splits(self) -> Path:
        return self.root / "splits"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def fitted(self) -> Path:
        """The ID and title models of this layout's fit: `models/` (test fit) or `models/val/` (val fit)."""
        return self.models if self.period == "test" else self.models / "val"

    @property
    def text(self) -> Path:
        """The title model's catalog vectors (`text/val/` for the val fit) and the memory snapshot."""
        return self.root / "text" if self.period == "test" else self.root / "text" / "val"

    @property
    def qdrant(self) -> Path:
        """The embedded vector engine's collections."""
        return self.root / "qdrant"

    @property
    def eval(self) -> Path:
        """One folder per method (`metrics.json`, `rankings.parquet`) and `report.md`."""
        return self.root / "eval"

    @property
    def llm(self) -> Path:
        """The LLM stage's prompts, curves and records."""
        return self.root / "llm"

    @property
    def registry(self) -> Path:
        """Versioned serving bundles (`serving.registry`)."""
        return self.root / "registry"

    @property
    def inbox(self) -> Path:
        """Incremental batches waiting to be applied (the default inbox)."""
        return self.root / "inbox"

    # -- files -----------------------------------------------------------------------------------------
    @property
    def items(self) -> Path:
        return self.canonical / "items.parquet"

    @property
    def events(self) -> Path:
        return self.canonical / "events.parquet"

    @property
    def search_results(self) -> Path:
        return self.canonical / "search_results.parquet"

    @property
    def activity(self) -> Path:
        """The point-in-time activity windows (`feature_repo.activity`)."""
        return self.features / "activity_windows.parquet"

    @property
    def targets(self) -> Path:
        return self.splits / "targets.parquet"

    @property
    def train_events(self) -> Path:
        return self.splits / "train_events.parquet"

    @property
    def eval_targets(self) -> Path:
        """The targets with each user's history strictly before the target (Feast point-in-time join)."""
        return self.splits / "eval_targets.parquet"

    @property
    def train_history(self) -> Path:
        """This fit's ID-model training sequences, read from Feast at its training cut (refit k >= 1: at its start)."""
        if self.refit_k:
            return self.root / "seqrec" / "refits" / str(self.refit_k) / "train_history.parquet"
        return self.root / "seqrec" / f"train_history_{self.period}.parquet"

    @property
    def refits(self) -> Path:
        """The earlier rolling refits' ID models, `models/refits/<k>/` (see the module docstring)."""
        return self.models / "refits"

    def model(self, name: str) -> Path:
        """A sequential ID model's checkpoint of this fit, e.g. `model("core-trm")`."""
        if self.refit_k is not None:
            return self.refits / str(self.refit_k) / f"{name}.pt"
        return self.fitted / f"{name}.pt"

    @property
    def title_model(self) -> Path:
        return self.fitted / "title"

    @property
    def title_vectors(self) -> Path:
        """Every catalog item's title vector in catalog order (`Catalog.from_items`), for exact evaluation."""
        return self.text / "title_vectors.npy"

    @property
    def memory_snapshot(self) -> Path:
        return self.text / "memory"

    @property
    def variant_ranker(self) -> Path:
        return self.models / "variant_ranker.json"

    @property
    def ranker(self) -> Path:
        """The LambdaMART bag (`models/ranker/{model_*.txt,ranker.json,importance.png}`)."""
        return self.models / "ranker"

    @property
    def ranker_val_top(self) -> Path:
        """The ranker's top 20 per validation target by out-of-fold scores (what `ranker-llm` and the LLM's
        candidate prompts train on)."""
        return self.models / "ranker_val_top.parquet"

    @property
    def ranker_llm(self) -> Path:
        """The second LambdaMART pass of `ranker-llm` over the LLM's letter scores (`models.ranker.llm_pass`)."""
        return self.models / "ranker_llm"

    @property
    def llm_adapter(self) -> Path:
        return self.models / "llm_adapter"

    @property
    def llm_engine(self) -> Path:
        """The adapter merged into the base model and converted for CTranslate2 (`models.llm.engine`)."""
        return self.models / "llm_engine"

    @property
    def popularity(self) -> Path:
        """A bundle's best sellers per category (`serving.bundle`)."""
        return self.root / "serving" / "popularity.json"

    # -- helpers ---------------------------------------------------------------------------------------
    @staticmethod
    def ensure(path: Path) -> Path:
        """Create `path`'s parent folder (for a file about to be written) and return the path."""
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def read_items(self) -> pd.DataFrame:
        """The canonical catalog alone (most readers need only it)."""
        return pd.read_parquet(self.items)

    def split_targets(self, split: str, columns: list[str] | None = None) -> pd.DataFrame:
        """The evaluation targets of one split ("val" or "test"), with their histories, in file order."""
        read = None if columns is None else list(dict.fromkeys([*columns, "split"]))
        t = pd.read_parquet(self.eval_targets, columns=read)
        t = t[t["split"] == split].reset_index(drop=True)
        return t if columns is None else t[columns]

    def val_targets(self) -> pd.DataFrame:
        return self.split_targets("val")

    def test_targets(self) -> pd.DataFrame:
        return self.split_targets("test")


def cache_root() -> Path:
    """Where derived artefacts are cached across runs and processes (the SmolLM2 fp32 copy, the compiled ranker, the
    title tokens, the activity table's arrays): `$FASHIONREC_CACHE`, default `~/.cache/fashionrec`."""
    return Path(os.environ.get("FASHIONREC_CACHE") or Path.home() / ".cache" / "fashionrec")
