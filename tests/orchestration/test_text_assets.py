"""Dagster: the text group (title model, title embeddings, query memory, retrieval evals) and the LLM group (with
the tiny model) on a tiny workdir."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from dagster import AssetSelection, DagsterInstance, materialize

from evaluation.factories import as_of_memory, ranker_scorer, retrieval_scorer
from evaluation.metrics import evaluate
from feature_repo.features import write_feature_tables
from feature_repo.layout import Layout
from feature_repo.splits import Splits, leave_one_out, write_splits
from models.catalog import Catalog
from models.llm.engine import native_bf16
from models.seqrec import build_model, save_checkpoint
from models.seqrec.vocab import ItemVocab
from orchestration.assets.text import RETRIEVAL_MODES
from orchestration.definitions import all_assets, build_resources
from orchestration.parallel import step_cores
from orchestration.resources import QdrantResource
from serving.registry import file_digest
from tests.conftest import at, make_tiny_tables

TEXT_ASSETS = {"title_model", "item_title_embeddings", "query_memory", "variant_ranker",
               "retrieval_id_only", "retrieval_title_only", "retrieval_mixup",
               "retrieval_title_only_variants", "retrieval_mixup_variants"}  # fmt: skip
RUNS_ON = "torch-bf16" if native_bf16() else "ctranslate2-int8"  # what the default engine, `auto`, runs on here
LLM_ASSETS = {"llm_prompts", "llm_perplexity", "llm_adapter", "llm_engine", "llm_eval"}
# ranker_llm and ranker_llm_eval read the learned ranker and its features: the whole-graph CLI test runs them.


def tiny_workdir(root: Path) -> None:
    """What the upstream assets would write: canonical tables, splits with histories, tiny CORE checkpoints: the val
    fit, and two test fits as rolling refits would leave them (starting @0 and @30: u4's A2 @41 is the second's)."""
    tables = make_tiny_tables()
    tables.write(root / "canonical")
    s = leave_one_out(tables.events, tables.items)
    # Every event as the val fit's "training" so its title model gets 4 purchase pairs (the real split leaves the
    # tiny set 1); the test refit reads each user's events before their test target.
    write_splits(Splits(s.targets, tables.events, s.protocol, refits=(at(0), at(30))), root / "splits")
    ev = tables.events
    rows = []
    for t in s.targets.itertuples(index=False):
        h = ev[(ev["user_id"] == t.user_id) & (ev["timestamp"] < t.target_ts)]
        rows.append({**t._asdict(), "seq_actions": h["action"].tolist(),
                     "seq_item_ids": h["item_id"].fillna("").tolist(), "seq_queries": h["query"].fillna("").tolist()})
    pd.DataFrame(rows).to_parquet(root / "splits" / "eval_targets.parquet", index=False)
    # The learned ranker's top lists of the validation targets (its out-of-fold order): here, each category's items.
    val = Layout(root).val_targets()
    by_cat = tables.items.sort_values("item_id").groupby("category")["item_id"].agg(list)
    pd.DataFrame({"position": range(len(val)), "user_id": val["user_id"], "target_ts": val["target_ts"],
                  "target_item_id": val["target_item_id"], "items": [by_cat[c] for c in val["category"]],
                  "scores": [list(np.arange(len(by_cat[c]), 0, -1.0)) for c in val["category"]],
                  "hit": [t in by_cat[c] for t, c in zip(val["target_item_id"], val["category"], strict=True)]}
                 ).to_parquet(Layout.ensure(Layout(root).ranker_val_top), index=False)
    torch.manual_seed(0)
    vocab = ItemVocab.from_items(["F1", "F2", "C1", "A1"])
    lay = Layout(root)
    for path in (lay.at("val").model("core-trm"), lay.refit(0).model("core-trm"), lay.model("core-trm")):
        save_checkpoint(Layout.ensure(path), build_model("core-trm", len(vocab), dim=8, max_len=5), vocab)


@pytest.mark.slow  # ~60 s on a loaded 2-core box: trains a title model, a tiny LLM, and runs the evals
def test_materialize_text_and_llm_groups(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("FASHIONREC_WORKDIR", "FASHIONREC_FORMAT", "FASHIONREC_DATA", "FASHIONREC_QDRANT_URL"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "models").mkdir()
    tiny_workdir(tmp_path)
    resources = build_resources(None, "canonical", str(tmp_path), training={"title_epochs": 1, "progress": False},
                                llm={"model": "tiny", "train_prompts": 4, "eval_targets": 3, "max_train_seconds": 20,
                                     "max_new_tokens": 12, "format_check": 1})
    with DagsterInstance.ephemeral() as instance:
        result = materialize(all_assets, resources=resources, instance=instance,
                             selection=AssetSelection.groups("text", "llm")
                             - AssetSelection.assets("ranker_llm", "ranker_llm_eval"))
    assert result.success
    done = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert done == TEXT_ASSETS | LLM_ASSETS
    meta = result.asset_materializations_for_node("item_title_embeddings")[0].metadata
    assert meta["points"].value == 9  # every catalog item, cold ones included
    assert meta["per_category"].value == {"Accessories & Jewelry": 3, "Clothing": 3, "Footwear": 3}
    memory = result.asset_materializations_for_node("query_memory")[0].metadata
    assert memory["queries"].value == memory["points"].value >= 1
    ranker = result.asset_materializations_for_node("variant_ranker")[0].metadata
    n_val = int((pd.read_parquet(tmp_path / "splits" / "eval_targets.parquet")["split"] == "val").sum())
    assert ranker["examples"].value == n_val == ranker["used"].value + ranker["skipped"].value >= 1
    assert ranker["training_targets"].value == f"{n_val} of {n_val}"  # under VariantConfig.max_targets: every one
    saved = json.loads((tmp_path / "models" / "variant_ranker.json").read_text())
    assert saved["fit_info"]["examples"] == n_val
    for method in ("retrieval-id-only", "retrieval-title-only", "retrieval-mixup", "retrieval-title-only-variants",
                   "retrieval-mixup-variants"):
        metrics = json.loads((tmp_path / "eval" / method / "metrics.json").read_text())
        assert metrics["overall"]["n"] == 3 and metrics["id_fits"] == 2
    # Each test target's ID list comes from its own fit: the same ranks as each fit's scorer on its targets alone.
    lay, catalog = Layout(tmp_path), Catalog.from_items(pd.read_parquet(tmp_path / "canonical" / "items.parquet"))
    test = lay.test_targets()
    mine = pd.read_parquet(tmp_path / "eval" / "retrieval-id-only" / "rankings.parquet")
    mine = mine.set_index("user_id")["target_rank"]
    for fit_lay, users in ((lay.refit(0), ["u1", "u2"]), (lay, ["u4"])):
        alone = evaluate("x", retrieval_scorer(fit_lay, catalog, RETRIEVAL_MODES["id-only"]),
                         test[test["user_id"].isin(users)], catalog, progress=False).rankings
        assert alone.set_index("user_id")["target_rank"].to_dict() == mine.loc[users].to_dict()
    # The fits' scorers over one catalog share the title side and the ranking stage's catalog facts, read once; each
    # holds its own ID vectors, and the ranking stage reads those (NaN where the ID model has no row of its own).
    memory = as_of_memory(lay)
    fits = [retrieval_scorer(f, catalog, RETRIEVAL_MODES["mixup"], memory) for f in (lay.refit(0), lay)]
    assert fits[0].title_vectors is fits[1].title_vectors and fits[0].index is fits[1].index is catalog.index
    assert not np.array_equal(fits[0].id_vectors, fits[1].id_vectors)
    tables = make_tiny_tables()
    write_feature_tables(tables.items, tables.events, lay.features)  # the ranking stage's activity windows
    stages = [ranker_scorer(f, catalog, memory=memory) for f in (lay.refit(0), lay)]
    assert stages[0].ctx.item_key is stages[1].ctx.item_key and stages[0].ctx.activity is stages[1].ctx.activity
    assert stages[0].stage.searches is stages[1].stage.searches
    rows = np.arange(len(catalog.items))
    for fit, stage in zip(fits, stages, strict=True):
        got = stage.ctx.id_vectors(rows)
        assert np.array_equal(np.isnan(got).all(axis=1), ~fit.id_known) and (fit.id_known.any())
        assert np.array_equal(got[fit.id_known], fit.id_vectors[fit.id_known])
        assert np.array_equal(stage.ctx.title_vectors(rows), fit.title_vectors)
    with QdrantResource(workdir=str(tmp_path)).store() as store:
        assert store.count("item_title_embeddings", partition="Footwear") == 3
    title = result.asset_materializations_for_node("title_model")[0].metadata  # both fits, each on its own pairs
    assert title["val/pairs"].value == 4 and title["test/pairs"].value == 2  # u1's F1 and C1 precede its test F2
    assert title["processes"].value == min(2, step_cores())  # the two fits at once where the step has two cores
    for fit in ("val", "test"):
        assert (Layout(tmp_path).at(fit).title_vectors).exists()  # type: ignore[arg-type]
    # The five retrieval evals are one step (one pass over the targets); selecting one runs that one alone.
    evals = result.asset_materializations_for_node("retrieval_evals")
    assert {m.asset_key.to_user_string() for m in evals} == {k for k in TEXT_ASSETS if k.startswith("retrieval_")}
    assert {m.metadata["eval_seconds"].value for m in evals} == {evals[0].metadata["eval_seconds"].value}
    before = (tmp_path / "eval" / "retrieval-mixup" / "metrics.json").stat().st_mtime_ns
    with DagsterInstance.ephemeral() as instance:
        one = materialize(all_assets, resources=resources, instance=instance,
                          selection=AssetSelection.assets("retrieval_id_only"))
    assert {e.asset_key.to_user_string() for e in one.get_asset_materialization_events()} == {"retrieval_id_only"}
    assert (tmp_path / "eval" / "retrieval-mixup" / "metrics.json").stat().st_mtime_ns == before
    again = json.loads((tmp_path / "eval" / "retrieval-id-only" / "metrics.json").read_text())
    assert again["overall"]["n"] == 3 and again["id_fits"] == 2 and "variant_weights" not in again

    # The LLM group: prompts from the validation target (too few to hold one out for the format check: see
    # test_the_format_check_holds_out_whole_targets), an adapter that names its base model, the llm-* rows.
    prompts = result.asset_materializations_for_node("llm_prompts")[0].metadata
    assert prompts["generate_prompts"].value == n_val and prompts["base_model"].value == "tiny"
    assert prompts["format_check_prompts"].value == 0 and prompts["validation_targets"].value == n_val
    # A candidate prompt for each validation target whose bought item is in its ranker list (here: every one).
    assert prompts["candidate_prompts"].value == n_val
    assert len(pd.read_parquet(tmp_path / "llm" / "perplexity.parquet")) == 2 * n_val
    adapter = result.asset_materializations_for_node("llm_adapter")[0].metadata
    assert adapter["base_model"].value == "tiny" and adapter["steps"].value >= 1
    assert 0 < adapter["trainable_parameters"].value < adapter["parameters"].value
    assert (tmp_path / "models" / "llm_adapter" / "adapter_config.json").exists()
    assert json.loads((tmp_path / "models" / "llm_adapter" / "llm_meta.json").read_text())["base_model"] == "tiny"
    assert (tmp_path / "llm" / "loss.png").stat().st_size > 1000
    engine = result.asset_materializations_for_node("llm_engine")[0].metadata  # the adapter, merged and converted
    meta = json.loads((tmp_path / "models" / "llm_engine" / "engine_meta.json").read_text())
    assert engine["engine"].value == "ctranslate2-int8" and engine["rebuilt"].value
    assert engine["runs_on"].value == RUNS_ON
    assert meta["adapter_digest"] == file_digest(tmp_path / "models" / "llm_adapter") and meta["base_model"] == "tiny"
    items = pd.read_parquet(tmp_path / "canonical" / "items.parquet").set_index("item_id")["category"]
    for method in ("llm-generate-mixup", "llm-candidates", "llm-sample-base"):
        metrics = json.loads((tmp_path / "eval" / method / "metrics.json").read_text())
        assert metrics["overall"]["n"] == 3 and metrics["llm_base_model"] == "tiny"
        assert metrics["llm_engine"] == RUNS_ON  # the default engine, `auto`, on this CPU
        ranked = pd.read_parquet(tmp_path / "eval" / method / "rankings.parquet")
        for cat, ids in zip(ranked["category"], ranked["ranked_item_ids"], strict=True):
            assert (items.loc[list(ids)] == cat).all()  # every recommended item is in the target's category
    gen = json.loads((tmp_path / "eval" / "llm-generate-mixup" / "metrics.json").read_text())["generation"]
    assert gen["n"] == 3 and 0 <= gen["format_violation_rate"] <= 1


def test_the_format_check_holds_out_whole_targets() -> None:
    """The format check's targets come only from beyond the training sample; a held-out target keeps its generation
    prompt (as `check`) and loses its candidate prompt, so nothing of it is trained on."""
    from orchestration.assets.llm import CHECK, format_check_targets, mark_format_check

    held = format_check_targets(10, 6, 4, seed=0)
    assert held.sum() == 4 and (held == format_check_targets(10, 6, 4, seed=0)).all()
    assert format_check_targets(7, 6, 4, seed=0).sum() == 1 and format_check_targets(5, 6, 4, seed=0).sum() == 0
    ts = pd.to_datetime(["2024-01-01", "2024-01-01", "2024-01-02", "2024-01-02", "2024-01-03"], utc=True)
    df = pd.DataFrame({"user_id": ["a", "a", "b", "b", "a"], "target_ts": ts,
                       "kind": ["generate", "candidates", "generate", "candidates", "generate"]})
    out = mark_format_check(df, {("b", ts[2])})
    assert out["kind"].tolist() == ["generate", "candidates", CHECK, "generate"]
    assert out["user_id"].tolist() == ["a", "a", "b", "a"]
