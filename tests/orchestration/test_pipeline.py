"""Dagster: the definitions load, and the whole graph materializes on the tiny dataset (also via the CLI)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from dagster import AssetCheckKey, AssetKey, AssetSelection, DagsterInstance, Definitions, materialize
from typer.testing import CliRunner

from evaluation.metrics import evaluate
from evaluation.seqrec import SeqScorer
from feature_repo.layout import Layout
from feature_repo.splits import ROLLING_EPOCHS, fit_index, read_refits, read_user_share, training_user_mask
from models.catalog import Catalog
from models.seqrec import load_checkpoint
from orchestration.cli import app
from orchestration.definitions import all_assets, all_checks, build_resources, defs
from orchestration.instance import workdir_instance
from orchestration.resources import ProtocolResource
from serving.registry import SERVING as SERVING_NAME
from serving.registry import Registry
from tests.conftest import at, make_tiny_tables

SEQREC = {"seqrec_sequences", "id_embeddings"} | {f"seqrec_{m.replace('-', '_')}" for m in
                                                  ("core-ave", "core-trm", "sasrec-ce", "sasrec-bce", "gru4rec",
                                                   "bert4rec", "nextitnet")}
RETRIEVAL_EVALS = {"retrieval_id_only", "retrieval_title_only", "retrieval_mixup", "retrieval_title_only_variants",
                   "retrieval_mixup_variants"}  # one step: retrieval_evals
TEXT = {"title_model", "item_title_embeddings", "query_memory", "variant_ranker"} | RETRIEVAL_EVALS
LLM = {"llm_prompts", "llm_perplexity", "llm_adapter", "llm_engine", "ranker_llm", "ranker_llm_eval", "llm_eval"}
SERVING = {"serving_bundle"}
RANKING = {"ranker", "ranker_eval"}
ASSETS = {"canonical_tables", "feature_tables", "feast_online_store", "splits", "eval_targets",
          "popularity_eval", "last_search_eval", "evaluation_report", "paper_report"} | SEQREC  # fmt: skip
CHECKS = {("canonical_tables", "canonical_row_counts"), ("canonical_tables", "referential_integrity"),
          ("eval_targets", "point_in_time_safety"), ("splits", "training_before_targets"),
          ("seqrec_sequences", "fits_before_their_targets")}  # fmt: skip
METHODS = ("last-search", "popularity")
ORACLE = {
    "all": {"n": 3, "exp_recall10": 0.5, "exp_ndcg10": 0.5, "exp_mrr": 0.5},
    "Footwear": {"exp_recall10": 0.5},
}
# The per-target oracle (final purchases) takes precedence over the whole-set json: the ceiling of the evaluated
# targets is the mean of theirs. Leave-one-out tests all three (0.4); the temporal run below tests F2 and A2 (0.5).
ORACLE_ROWS = [("u1", "F2", 22, 0.1), ("u2", "C2", 7, 0.2), ("u4", "A2", 41, 0.9)]

# Hand-worked test ranks on the tiny dataset (see conftest.py) under leave-one-out; test targets F2 (u1 @22),
# C2 (u2 @7), A2 (u4 @41). Only A2 is cold-start: someone clicked F2 (@21) and C2 (@6) before it was bought.
#   popularity (interactions strictly before the target, 30-day window, in the category):
#     F2: F1 3 (u1 click+purchase, u3 click), F2 1 (u1 click @21), F3 0 (u3's click is @30) -> rank 2
#     C2: C2 1 (u2 click @6), C1/C3 0 -> rank 1
#     A2: A1 1 (u4 click @40; the A1 purchase is AT 41), A2 0 tied with A3 0 -> 1 + 1 + 1 = rank 3
#   last-search: u1's last search before @22 is #3 (F3, F2) -> F3, F2, then F1 -> rank 2; u2's is #4 (C2, C3)
#     -> rank 1; u4 never searched -> popularity -> rank 3.
# Rows come per category, sorted: Accessories & Jewelry, Clothing, Footwear.
RANKS = [3, 1, 2]
OVERALL = {
    "n": 3,
    "recall@10": 1.0,
    "ndcg@10": (0.5 + 1 + 1 / math.log2(3)) / 3,
    "mrr": (1 / 3 + 1 + 1 / 2) / 3,
}
COLD = {"n": 1, "recall@10": 1.0, "ndcg@10": 0.5, "mrr": 1 / 3}  # A2


def test_definitions_load() -> None:
    assert isinstance(defs, Definitions)
    Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    assert {k.to_user_string() for k in graph.get_all_asset_keys()} == ASSETS | TEXT | LLM | SERVING | RANKING
    assert {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys} == CHECKS
    assert set(defs.resources) == {"dataset", "workdir", "feast", "training", "qdrant", "protocol", "llm"}
    job = defs.resolve_implicit_global_asset_job_def()  # one op per asset, but one for the retrieval evals, + checks
    ops = ASSETS | (TEXT - RETRIEVAL_EVALS) | {"retrieval_evals"} | LLM | SERVING | RANKING
    assert {n.name for n in job.graph.node_defs} == ops | {f"{a}_{c}" for a, c in CHECKS}


def test_build_resources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("FASHIONREC_WORKDIR", "FASHIONREC_FORMAT", "FASHIONREC_DATA"):
        monkeypatch.delenv(var, raising=False)
    r = build_resources(str(tmp_path / "data"), "canonical", str(tmp_path / "work"))
    assert r["dataset"].path == tmp_path / "data" and r["workdir"].eval == tmp_path / "work" / "eval"
    assert r["feast"].repo().feast_dir == tmp_path / "work" / "feast"
    assert r["training"].train_config().sampled_negatives is None  # auto: by the vocabulary's size
    sampled = build_resources(str(tmp_path / "data"), training={"sampled_negatives": 64, "seed": 3})["training"]
    assert (sampled.train_config().sampled_negatives, sampled.train_config().seed) == (64, 3)


@pytest.mark.parametrize("value", ["lots", "-4"])
def test_cli_rejects_a_bad_sampled_negatives(value: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["run", "--workdir", str(tmp_path / "work"), "--sampled-negatives", value])
    assert result.exit_code == 2 and "'auto' or a count >= 0" in result.output, result.output
    assert not (tmp_path / "work").exists()  # refused before anything ran


def test_cli_rejects_rolling_refits_without_an_epoch(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["run", "--workdir", str(tmp_path / "work"), "--rolling-epochs", "0"])
    assert result.exit_code == 2 and "must be >= 1, got 0" in result.output, result.output
    assert not (tmp_path / "work").exists()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pipeline_data")
    make_tiny_tables().write(out)
    (out / "oracle_metrics.json").write_text(json.dumps(ORACLE))
    pd.DataFrame([{"user_id": u, "item_id": i, "timestamp": at(m), "exp_recall10": e, "exp_ndcg10": e, "exp_mrr": e}
                  for u, i, m, e in ORACLE_ROWS]).to_parquet(out / "oracle.parquet")
    return out


def _materialize(data_dir: Path, workdir: Path, protocol: ProtocolResource | None = None,
                 training: dict | None = None):
    resources = build_resources(str(data_dir), "canonical", str(workdir), training=training)
    resources["protocol"] = protocol or ProtocolResource(protocol="loo")
    with DagsterInstance.ephemeral() as instance:
        return materialize(
            [*all_assets, *all_checks],
            instance=instance,
            resources=resources,
            selection=AssetSelection.all() - AssetSelection.groups("text", "llm", "serving", "ranking"),  # in test_text_assets.py
        )


def _outputs(workdir: Path) -> dict[str, object]:
    out: dict[str, object] = {
        f"{m}/metrics.json": json.loads((workdir / "eval" / m / "metrics.json").read_text()) for m in METHODS
    }
    out |= {
        f"{m}/rankings.parquet": pq.read_table(workdir / "eval" / m / "rankings.parquet") for m in METHODS
    }
    out["report.md"] = (workdir / "eval" / "report.md").read_text()
    return out


@pytest.fixture(scope="module")
def first_run(data_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    workdir = tmp_path_factory.mktemp("pipeline_work")
    with pytest.MonkeyPatch.context() as mp:
        for var in ("FASHIONREC_WORKDIR", "FASHIONREC_FORMAT", "FASHIONREC_DATA"):
            mp.delenv(var, raising=False)
        result = _materialize(data_dir, workdir)
    return workdir, result, _outputs(workdir)


@pytest.mark.slow
def test_materialize_whole_graph(first_run) -> None:
    workdir, result, _ = first_run
    assert result.success
    done = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert done == ASSETS
    evals = result.get_asset_check_evaluations()
    assert {(c.asset_key.to_user_string(), c.check_name) for c in evals} == CHECKS
    assert all(c.passed for c in evals), [(c.check_name, c.metadata) for c in evals if not c.passed]
    for rel in (
        "canonical/items.parquet",
        "features/user_sequence.parquet",
        "feast/registry.db",
        "splits/targets.parquet",
        "splits/eval_targets.parquet",
        "eval/report.md",
    ):
        assert (workdir / rel).is_file(), rel
    meta = result.asset_materializations_for_node("canonical_tables")[0].metadata
    assert meta["kept_events"].value == 17 and meta["quarantined_events"].value == 0


@pytest.mark.slow
def test_pipeline_metrics_by_hand(first_run) -> None:
    workdir, _, outputs = first_run
    for m in METHODS:
        metrics = outputs[f"{m}/metrics.json"]
        assert metrics["method"] == m
        assert metrics["overall"] == pytest.approx(OVERALL) and metrics["cold_start"] == pytest.approx(COLD)
        assert {c: v["n_items"] for c, v in metrics["per_category"].items()} == {
            "Accessories & Jewelry": 3, "Clothing": 3, "Footwear": 3}  # fmt: skip
        rankings = outputs[f"{m}/rankings.parquet"].to_pandas()
        assert rankings["target_item_id"].tolist() == ["A2", "C2", "F2"]
        assert rankings["target_rank"].tolist() == RANKS
        assert rankings["cold_start"].tolist() == [True, False, False]
    ranked = outputs["last-search/rankings.parquet"].to_pandas()["ranked_item_ids"].map(list).tolist()
    assert ranked[2] == ["F3", "F2", "F1"]  # u1's last search (#3) shows F3 then F2
    report = outputs["report.md"]
    assert report.startswith("# Evaluation report")
    assert "Protocol: leave-one-out" in report and "3 test targets, 33.3% cold-start" in report
    assert "| ceiling (oracle exp_*) | 3 | 0.4000 | 0.4000 | 0.4000 | | | | |" in report
    assert "| popularity | Footwear | 3 | 1 | 1.0000 | 0.6309 | 0.5000 | 10.000 |" in report  # F2 rank 2, ceiling .1


@pytest.mark.slow
def test_rematerialize_is_idempotent(first_run, data_dir: Path) -> None:
    workdir, _, before = first_run
    canonical = {n: pq.read_table(workdir / "canonical" / f"{n}.parquet") for n in ("items", "events")}
    result = _materialize(data_dir, workdir)
    assert result.success and all(c.passed for c in result.get_asset_check_evaluations())
    after = _outputs(workdir)
    assert after.keys() == before.keys()
    for key, value in before.items():
        assert after[key].equals(value) if hasattr(value, "equals") else after[key] == value, key
    for n, table in canonical.items():
        assert pq.read_table(workdir / "canonical" / f"{n}.parquet").equals(table), n


def test_every_writer_of_an_embedded_store_is_tagged() -> None:
    """The multiprocess executors let one step per store tag write at a time: every asset that takes the Qdrant
    resource writes its collections, and `feast_online_store` writes the online store."""
    from orchestration.jobs import STORE_TAG

    writers = {k.to_user_string(): a.op.tags.get(STORE_TAG) for a in all_assets for k in a.keys
               if "qdrant" in a.required_resource_keys or k.to_user_string() == "feast_online_store"}
    assert writers == {"id_embeddings": "qdrant", "item_title_embeddings": "qdrant", "query_memory": "qdrant",
                       "serving_bundle": "qdrant", "feast_online_store": "feast"}
    assert defs.resolve_job_def("retrain_all").executor_def.name == "multiprocess"  # the UI's runs: the same limits


@pytest.mark.slow
def test_the_multiprocess_executor_gives_the_in_process_rankings(first_run, data_dir: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """`fashionrec run --executor multiprocess`: each step in a process of its own (not this one), the checks
    evaluated, the run recorded in the workdir's instance, and the same rankings as `materialize` in process."""
    import os

    from dagster import DagsterEventType

    for var in ("FASHIONREC_WORKDIR", "FASHIONREC_FORMAT", "FASHIONREC_DATA"):
        monkeypatch.delenv(var, raising=False)
    work = tmp_path / "work"
    monkeypatch.setenv("FASHIONREC_WORKDIR", str(tmp_path / "elsewhere"))  # the run's own settings win
    result = CliRunner().invoke(app, ["run", "--data", str(data_dir), "--workdir", str(work), "--protocol", "loo",
                                      "--no-retrieval", "--no-llm", "--models", "core-trm", "--epochs", "2",
                                      "--seed", "3", "--sampled-negatives", "4", "--executor", "multiprocess"])
    assert result.exit_code == 0, result.output
    assert "executor: multiprocess (up to 2 steps at once" in result.output
    assert "(multiprocess executor)" in result.output and "asset check failed" not in result.output
    assert not (tmp_path / "elsewhere").exists()
    # The run-level knobs reached the step that trained CORE-trm, in its own process.
    trained = json.loads((work / "eval" / "core-trm" / "metrics.json").read_text())["train_config"]
    assert (trained["seed"], trained["sampled_negatives"]) == (3, 4) and trained["epochs"] <= 2
    _, _, before = first_run
    after = _outputs(work)
    for m in METHODS:
        assert after[f"{m}/metrics.json"] == before[f"{m}/metrics.json"], m
        assert after[f"{m}/rankings.parquet"].equals(before[f"{m}/rankings.parquet"]), m
    with workdir_instance(work) as instance:
        (run,) = instance.get_runs()
        starts = instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_START)
        checks = instance.all_logs(run.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION)
    pids = {e.dagster_event.pid for e in starts}
    assert len(starts) >= 8 and os.getpid() not in pids and len(pids) == len(starts)  # a process per step
    evals = [e.dagster_event.event_specific_data for e in checks]
    assert {(c.asset_key.to_user_string(), c.check_name) for c in evals} == CHECKS and all(c.passed for c in evals)


@pytest.mark.slow
def test_cli_run_prints_the_metrics_table(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("FASHIONREC_WORKDIR", "FASHIONREC_FORMAT", "FASHIONREC_DATA"):
        monkeypatch.delenv(var, raising=False)
    result = CliRunner().invoke(app, ["run", "--data", str(data_dir), "--workdir", str(tmp_path / "work"),
                                      "--protocol", "loo", "--llm-model", "tiny", "--llm-prompts", "2",
                                      "--llm-targets", "3", "--llm-train-seconds", "5"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "Timestamps are to the second: a moment is a user's events at one second. " \
           "Protocol: leave-one-out (per user; training holds other users' later events; the ID and title " \
           "models that score the test targets are refitted on each user's events before them). 3 test targets, " \
           "33.3% cold-start." in lines
    # OVERALL and COLD above, to 4 decimals: ndcg (0.5 + 1 + 0.6309) / 3 = 0.7103, mrr 11/18 = 0.6111;
    # cold (A2 at rank 3) ndcg 0.5, mrr 1/3
    for m in METHODS:
        assert f"| {m} | 3 | 1.0000 | 0.7103 | 0.6111 | 1 | 1.0000 | 0.5000 | 0.3333 |" in lines
    assert "| ceiling (oracle exp_*) | 3 | 0.4000 | 0.4000 | 0.4000 | | | | |" in lines
    for method in ("retrieval-mixup", "retrieval-mixup-variants", "retrieval-title-only-variants",  # on by default
                   "llm-generate-mixup", "llm-candidates", "llm-sample-base", "ranker-llm", "ranker-on-llm-sample"):
        assert any(line.startswith(f"| {method} | 3 |") for line in lines), method
    assert "asset check failed" not in result.output
    assert (tmp_path / "work" / "eval" / "report.md").is_file()
    # How much the LLM stage trained, from the adapter's metadata, and where its measure of record is.
    meta = json.loads((tmp_path / "work" / "models" / "llm_adapter" / "llm_meta.json").read_text())
    stage = next(line for line in lines if line.startswith("LLM stage: "))
    assert f"trained {meta['steps']} steps on {meta['examples_seen']} prompts" in stage
    assert "ranker-llm's second pass on " in stage and "`benchmarks/llm.py`" in stage
    # The run recorded into the workdir's persistent instance: the UI opened on this workdir shows every asset.
    home = tmp_path / "work" / "dagster_home"
    assert "telemetry:\n  enabled: false" in (home / "dagster.yaml").read_text()
    with workdir_instance(tmp_path / "work") as instance:
        not_chosen = {f"seqrec_{m}" for m in ("core_ave", "sasrec_bce", "gru4rec", "bert4rec", "nextitnet")}
        missing = [a for a in sorted((ASSETS | TEXT | LLM | SERVING | RANKING) - not_chosen)
                   if instance.get_latest_materialization_event(AssetKey(a)) is None]
        assert not missing, missing
    # The serving path over what the run wrote: Feast online features -> Qdrant retrieval -> variant re-rank.
    rec = CliRunner().invoke(app, ["recommend", "u1", "--workdir", str(tmp_path / "work"), "--k", "2",
                                   "--no-ranker"])
    assert rec.exit_code == 0, rec.output
    lines = rec.output.splitlines()
    # From the bundle the run published (the registry's current version), as `fashionrec serve` reads it.
    current = Registry(tmp_path / "work" / "registry").current(SERVING_NAME)
    assert current is not None and lines[0].startswith(f"user u1: bundle {current.version}, category 'Footwear', "
                                                         "last query 'sneakers'") and "variant re-ranked" in lines[0]
    # u1 clicked/purchased F1 and F2: of the 3 Footwear items only F3 is left to recommend.
    assert len(lines) == 3 and lines[2].split()[:2] == ["0", "F3"]
    # The learned ranking stage keeps seen items as candidates (a flag, not a filter): all 3 Footwear items compete.
    rec = CliRunner().invoke(app, ["recommend", "u1", "--workdir", str(tmp_path / "work"), "--k", "3"])
    assert rec.exit_code == 0, rec.output
    lines = rec.output.splitlines()
    assert "learned ranking stage" in lines[0]
    assert sorted(line.split()[1] for line in lines[2:]) == ["F1", "F2", "F3"]
    bad = CliRunner().invoke(app, ["recommend", "nobody", "--workdir", str(tmp_path / "work")])
    assert bad.exit_code != 0 and "no online features" in bad.output
    assert (
        AssetCheckKey(AssetKey("eval_targets"), "point_in_time_safety")
        in defs.resolve_asset_graph().asset_check_keys
    )


@pytest.mark.slow
def test_temporal_protocol_end_to_end(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("FASHIONREC_WORKDIR", "FASHIONREC_FORMAT", "FASHIONREC_DATA"):
        monkeypatch.delenv(var, raising=False)
    # Span @0..@41: test cut @20.5 (last 50%), validation cut @8.2 (the 30% before). Test targets: u1's F2 @22 and
    # u4's A2 @41; validation: u1's C1 @12; u2's only purchase (@7) is training data.
    result = _materialize(data_dir, tmp_path, ProtocolResource(protocol="temporal", val_frac=0.3, test_frac=0.5))
    assert result.success and all(c.passed for c in result.get_asset_check_evaluations())
    targets = pd.read_parquet(tmp_path / "splits" / "targets.parquet")
    assert list(zip(targets["split"], targets["target_item_id"], strict=True)) == [("test", "F2"), ("test", "A2"),
                                                                                    ("val", "C1")]
    train = pd.read_parquet(tmp_path / "splits" / "train_events.parquet")
    assert train["timestamp"].max() == at(7)  # nothing at or after the validation cut
    # The val fit's sequences are read from Feast at the validation cut: no user's sequence reaches past it. The
    # test refit's reach the test cut (@20.5): they hold u1's C1 click @11 and purchase @12 and search @20.
    def latest(period: str) -> int:
        hist = pd.read_parquet(tmp_path / "seqrec" / f"train_history_{period}.parquet")
        return max(max(s) for s in hist["seq_timestamps"] if len(s))

    assert latest("val") == at(7).value // 1_000_000 and latest("test") == at(20).value // 1_000_000
    first, refit = load_checkpoint(tmp_path / "models" / "val" / "core-trm.pt"), load_checkpoint(
        tmp_path / "models" / "core-trm.pt")
    assert first.vocab.to_list() == ["C2", "F1"] and refit.vocab.to_list() == ["C1", "C2", "F1"]  # min_count 2
    meta = result.asset_materializations_for_node("seqrec_core_trm")[0].metadata
    assert meta["vocab_val"].value == 4 and meta["vocab_test"].value == 5
    assert refit.train_config.epochs == meta["best_epoch"].value + 1
    # Same hand-worked ranks as leave-one-out for these two targets (A2 rank 3, F2 rank 2); A2 alone is cold.
    for m in METHODS:
        r = pd.read_parquet(tmp_path / "eval" / m / "rankings.parquet")
        assert r["target_rank"].tolist() == [3, 2] and r["cold_start"].tolist() == [True, False]
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "Protocol: temporal (training before 2024-03-01 10:08" in report
    assert "| ceiling (oracle exp_*) | 2 | 0.5000 | 0.5000 | 0.5000 | | | | |" in report  # (0.1 + 0.9) / 2


def test_a_share_of_the_training_users_end_to_end(data_dir: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """`user_share` (`fashionrec run --user-share`) at a seed that leaves u1 out: u1's validation target and
    training events, and its sequences in the ID models' training histories, are gone; protocol.json records the
    share. With evaluation's test sample cut to one target, one of the two test targets is ranked by every method,
    and the report says it is a sample."""
    for var in ("FASHIONREC_WORKDIR", "FASHIONREC_FORMAT", "FASHIONREC_DATA"):
        monkeypatch.delenv(var, raising=False)
    users = pd.Series(["u1", "u2", "u3", "u4"])
    seed = next(k for k in range(100) if not training_user_mask(users, 0.5, k)[0]
                and training_user_mask(users, 0.5, k)[1:].sum() >= 2)
    kept = set(users[training_user_mask(users, 0.5, seed)])
    result = _materialize(data_dir, tmp_path, ProtocolResource(protocol="temporal", val_frac=0.3, test_frac=0.5,
                                                                max_test_targets=1),
                          training={"user_share": 0.5, "seed": seed, "epochs": 1})
    assert result.success and all(c.passed for c in result.get_asset_check_evaluations())
    targets = pd.read_parquet(tmp_path / "splits" / "targets.parquet")
    (row,) = zip(targets["split"], targets["target_item_id"], strict=True)
    assert row in {("test", "F2"), ("test", "A2")}
    train = pd.read_parquet(tmp_path / "splits" / "train_events.parquet")
    assert set(train["user_id"]) <= kept and "u1" not in set(train["user_id"])
    for period in ("val", "test"):
        hist = pd.read_parquet(tmp_path / "seqrec" / f"train_history_{period}.parquet")
        assert set(hist["user_id"]) <= kept, period
    assert json.loads((tmp_path / "splits" / "protocol.json").read_text())["training_users"]["share"] == 0.5
    assert read_user_share(tmp_path / "splits") == 0.5
    for m in METHODS:
        assert pd.read_parquet(tmp_path / "eval" / m / "rankings.parquet")["target_item_id"].tolist() == [row[1]]
    assert "1 test target (a seeded sample of 2), " in (tmp_path / "eval" / "report.md").read_text()


@pytest.mark.slow
def test_rolling_refits_end_to_end(data_dir: Path, tmp_path: Path) -> None:
    """Refits every 10 minutes of the tiny clock through the test window (cut @20.5, last target @41): fits start at
    @20.5, @30.5 and @40.5. Each refit's sequences end before its start, the rolling model keeps each fit, the last
    is the served checkpoint, and each test target is scored by the latest fit before it."""
    days = 10 / (24 * 60)
    result = _materialize(data_dir, tmp_path, ProtocolResource(protocol="temporal", val_frac=0.3, test_frac=0.5,
                                                               refit_every_days=days))
    assert result.success and all(c.passed for c in result.get_asset_check_evaluations())
    starts = read_refits(tmp_path / "splits")
    assert starts == (at(20.5), at(30.5), at(40.5))
    lay = Layout(tmp_path)

    def latest(path: Path) -> pd.Timestamp:
        hist = pd.read_parquet(path)
        return pd.Timestamp(max(max(s) for s in hist["seq_timestamps"] if len(s)), unit="ms", tz="UTC")

    # Refit 1 sees u1's F2 click and purchase (@21, @22) and u3's F3 click @30; refit 2 also u4's A1 click @40.
    assert latest(lay.refit(1).train_history) == at(30) and latest(lay.refit(2).train_history) == at(40)
    fits = [load_checkpoint(lay.refit(0).model("core-trm")), load_checkpoint(lay.refit(1).model("core-trm")),
            load_checkpoint(lay.model("core-trm"))]
    assert not lay.refit(2).model("core-trm").exists()  # the last fit is models/core-trm.pt, what a bundle serves
    assert [f.vocab.to_list() for f in fits] == [["C1", "C2", "F1"], *[["C1", "C2", "F1", "F2"]] * 2]  # min_count 2
    assert not lay.refit(0).model("sasrec-ce").exists()  # only TrainingResource.rolling_models roll
    meta = result.asset_materializations_for_node("seqrec_core_trm")[0].metadata
    assert meta["rolling_refits"].value == 2 and meta["vocab_last"].value == 6
    assert fits[2].train_config.epochs == ROLLING_EPOCHS  # TrainingResource.rolling_epochs
    # F2 @22 is scored by the fit at the test cut, A2 @41 by the last: the eval rows are those fits' own ranks.
    catalog = Catalog.from_items(pd.read_parquet(lay.items))
    test = lay.test_targets()
    assert fit_index(test["target_ts"], starts).tolist() == [0, 2]
    ranks = pd.read_parquet(tmp_path / "eval" / "core-trm" / "rankings.parquet")["target_rank"].tolist()
    for row, fit in ((0, fits[0]), (1, fits[2])):
        alone = evaluate("x", SeqScorer(fit.model, fit.vocab, catalog), test.iloc[[row]], catalog, progress=False)
        assert alone.rankings["target_rank"].tolist() == [ranks[row]]
    # The other model is refitted once: its row is the one fit at the test cut.
    sasrec = load_checkpoint(lay.model("sasrec-ce"))
    sasrec_ranks = evaluate("y", SeqScorer(sasrec.model, sasrec.vocab, catalog), test, catalog, progress=False)
    assert sasrec_ranks.rankings["target_rank"].tolist() == pd.read_parquet(
        tmp_path / "eval" / "sasrec-ce" / "rankings.parquet")["target_rank"].tolist()
    assert "the ID model is refitted every 0.00694444 days from the test cut (3 fits)" in (
        tmp_path / "eval" / "report.md").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["--no-retrieval"]])
def test_cli_run_without_the_id_model_skips_what_needs_it(data_dir: Path, tmp_path: Path, extra: list[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Choosing models never breaks the graph: without core-trm there is no ID collection to build (it crashed)."""
    for var in ("FASHIONREC_WORKDIR", "FASHIONREC_FORMAT", "FASHIONREC_DATA"):
        monkeypatch.delenv(var, raising=False)
    result = CliRunner().invoke(app, ["run", "--data", str(data_dir), "--workdir", str(tmp_path / "w"),
                                      "--models", "sasrec-ce", "--epochs", "1", *extra])
    assert result.exit_code == 0, result.output
    assert "--models without core-trm: skipping the ID-embedding collection" in result.output
    lines = result.output.splitlines()
    assert any(line.startswith("| sasrec-ce | ") for line in lines)
    assert not any(line.startswith(("| core-trm |", "| retrieval-", "| llm-")) for line in lines)


def test_day_resolution_dataset_through_dagster(tmp_path: Path) -> None:
    """H&M format: the resolution reaches dataset.json, the asset metadata and the report, the repeated row is
    quarantined without failing the row-count check, and the report has the basket hit rate."""
    from tests.helpers import write_hm

    data = write_hm(tmp_path / "hm")
    resources = build_resources(str(data), "hm", str(tmp_path / "work"))
    resources["protocol"] = ProtocolResource(protocol="loo")
    chosen = AssetSelection.groups("data") | AssetSelection.assets("popularity_eval", "evaluation_report")
    with DagsterInstance.ephemeral() as instance:
        result = materialize([*all_assets, *all_checks], instance=instance, resources=resources, selection=chosen)
    assert result.success
    meta = result.asset_materializations_for_node("canonical_tables")[0].metadata
    assert meta["resolution"].value == "day" and meta["load_report"].value["n_repeat_key_rows"] == 1
    info = json.loads((tmp_path / "work" / "canonical" / "dataset.json").read_text())
    assert (info["format"], info["resolution"]) == ("hm", "day")
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    # 1 of 12 rows (8%) is quarantined, but as a repeat in one moment, not a fault: the check passes.
    assert checks["canonical_row_counts"].passed and checks["canonical_row_counts"].metadata["repeat_in_moment"].value == 1
    report = (tmp_path / "work" / "eval" / "report.md").read_text()
    assert "Timestamps are days: a user's whole day (a basket) is one moment" in report
    assert "basket HR@10 |" in report and "of the test targets' days hold more than one item" in report
