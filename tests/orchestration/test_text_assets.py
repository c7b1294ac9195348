"""Dagster: the text group (title model, title embeddings, query memory, retrieval evals) on a tiny workdir."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from dagster import AssetSelection, DagsterInstance, materialize

from feature_repo.splits import leave_one_out
from models.seqrec import build_model, save_checkpoint
from models.seqrec.vocab import ItemVocab
from orchestration.definitions import all_assets, build_resources
from orchestration.resources import QdrantResource
from tests.conftest import make_tiny_tables

TEXT_ASSETS = {"title_model", "item_title_embeddings", "query_memory", "variant_ranker",
               "retrieval_id_only", "retrieval_title_only", "retrieval_mixup",
               "retrieval_title_only_variants", "retrieval_mixup_variants"}  # fmt: skip


def tiny_workdir(root: Path) -> None:
    """What the upstream assets would write: canonical tables, splits with histories, a tiny CORE checkpoint."""
    tables = make_tiny_tables()
    tables.write(root / "canonical")
    s = leave_one_out(tables.events, tables.items)
    (root / "splits").mkdir(parents=True)
    # Every event as "training" so the title model gets 4 purchase pairs (the real split leaves the tiny set 1).
    tables.events.to_parquet(root / "splits" / "train_events.parquet", index=False)
    ev = tables.events
    rows = []
    for t in s.targets.itertuples(index=False):
        h = ev[(ev["user_id"] == t.user_id) & (ev["timestamp"] < t.target_ts)]
        rows.append({**t._asdict(), "seq_actions": h["action"].tolist(),
                     "seq_item_ids": h["item_id"].fillna("").tolist(), "seq_queries": h["query"].fillna("").tolist()})
    pd.DataFrame(rows).to_parquet(root / "splits" / "eval_targets.parquet", index=False)
    torch.manual_seed(0)
    vocab = ItemVocab.from_items(["F1", "F2", "C1", "A1"])
    save_checkpoint(root / "models" / "core-trm.pt", build_model("core-trm", len(vocab), dim=8, max_len=5), vocab)


@pytest.mark.slow  # ~45 s on a loaded 2-core box: trains a title model and runs three evals
def test_materialize_text_group(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("FASHIONREC_WORKDIR", "FASHIONREC_FORMAT", "FASHIONREC_DATA", "FASHIONREC_QDRANT_URL"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "models").mkdir()
    tiny_workdir(tmp_path)
    resources = build_resources(None, "canonical", str(tmp_path), training={"title_epochs": 1, "progress": False})
    with DagsterInstance.ephemeral() as instance:
        result = materialize(all_assets, resources=resources, instance=instance,
                             selection=AssetSelection.groups("text"))
    assert result.success
    assert {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()} == TEXT_ASSETS
    meta = result.asset_materializations_for_node("item_title_embeddings")[0].metadata
    assert meta["points"].value == 9  # every catalog item, cold ones included
    assert meta["per_category"].value == {"Accessories & Jewelry": 3, "Clothing": 3, "Footwear": 3}
    memory = result.asset_materializations_for_node("query_memory")[0].metadata
    assert memory["queries"].value == memory["points"].value >= 1
    ranker = result.asset_materializations_for_node("variant_ranker")[0].metadata
    n_val = int((pd.read_parquet(tmp_path / "splits" / "eval_targets.parquet")["split"] == "val").sum())
    assert ranker["examples"].value == n_val == ranker["used"].value + ranker["skipped"].value >= 1
    saved = json.loads((tmp_path / "models" / "variant_ranker.json").read_text())
    assert saved["fit_info"]["examples"] == n_val
    for method in ("retrieval-id-only", "retrieval-title-only", "retrieval-mixup", "retrieval-title-only-variants",
                   "retrieval-mixup-variants"):
        metrics = json.loads((tmp_path / "eval" / method / "metrics.json").read_text())
        assert metrics["overall"]["n"] == 3
    with QdrantResource(workdir=str(tmp_path)).store() as store:
        assert store.count("item_title_embeddings", partition="Footwear") == 3
