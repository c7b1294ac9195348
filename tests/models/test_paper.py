"""The paper report (`evaluation.paper`, `fashionrec report`) and the ranker's feature-group ablation
(`evaluation.ablation`, `evaluation.suite`): hand-computed ranks and gains, the switch that removes exactly one
group, the refit that reproduces the saved ranker's evaluation exactly, and byte-identical regeneration."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from evaluation.ablation import TargetGroups, full_ranks
from evaluation.paper import Section, bootstrap_interval, table2
from evaluation.ranking import Examples, TrainingSet, fit_training_set
from models.ranker.features import FEATURE_GROUPS, FEATURE_NAMES, features_without
from models.ranker.model import LearnedRanker, RankerConfig
from orchestration.cli import app as cli


def test_the_feature_groups_partition_the_features() -> None:
    seen = [f for g in FEATURE_GROUPS.values() for f in g]
    assert sorted(seen) == sorted(FEATURE_NAMES) and len(seen) == len(set(seen))
    for name, group in FEATURE_GROUPS.items():
        kept = features_without(name)
        assert not set(kept) & set(group) and set(kept) | set(group) == set(FEATURE_NAMES)
        assert list(kept) == [f for f in FEATURE_NAMES if f in kept]  # FEATURE_NAMES order
    with pytest.raises(ValueError, match="unknown feature groups"):
        features_without("colour")


def test_a_ranker_without_a_group_has_none_of_its_columns() -> None:
    """Fitted on every column of the examples less one group's: the model, its boosters and the columns the ranking
    stage will hand it name the rest, in order; the dropped columns carry the signal, so the fit can tell."""
    rng = np.random.default_rng(0)
    drop = FEATURE_GROUPS["ages"]
    at = FEATURE_NAMES.index(drop[0])
    groups = []
    for _ in range(60):
        x = rng.normal(size=(12, len(FEATURE_NAMES))).astype(np.float32)
        y = np.zeros(12, np.float32)
        y[int(np.argmax(x[:, at]))] = 1.0  # the bought item is the one with the largest first "ages" column
        groups.append((x, y))
    ts = TrainingSet(Examples(groups, list(range(60)), [np.arange(12)] * 60, {}, 12.0, 0.0), None, [], 0)
    cfg = RankerConfig(bags=2, max_rounds=30, min_rounds=5, min_data_in_leaf=5, navigational=0.0)
    full = fit_training_set(ts, cfg)
    less = fit_training_set(ts, cfg, features_without("ages"))
    assert less.features == features_without("ages") and len(less.features) == len(FEATURE_NAMES) - len(drop)
    assert all(b.feature_name() == list(less.features) for b in less.boosters)
    assert not set(drop) & set(less.importances())
    assert list(full.importances())[0] == drop[0]  # with the group, its column decides


def test_full_ranks_count_ties_against_the_target() -> None:
    """No boosters: every candidate scores 0, so the target ranks after all of its candidates; a target that is no
    candidate keeps its fallback rank."""
    x = [np.zeros((5, len(FEATURE_NAMES)), np.float32), np.zeros((3, len(FEATURE_NAMES)), np.float32)]
    test = TargetGroups(np.array([0, 1]), [np.arange(5), np.arange(3)], x, np.array([2, -1]), 0.0)
    ranks = full_ranks(LearnedRanker([], FEATURE_NAMES), test, fallback=np.array([1, 40]))
    assert ranks.tolist() == [5, 40]


def test_bootstrap_interval() -> None:
    assert bootstrap_interval(np.full(50, 0.25)) == (0.25, 0.25)
    v = np.r_[np.zeros(50), np.ones(50)]
    lo, hi = bootstrap_interval(v)
    assert 0.35 < lo < 0.5 < hi < 0.65 and bootstrap_interval(v) == (lo, hi)  # seeded
    assert all(math.isnan(b) for b in bootstrap_interval(np.ones(1)))
    # 20,000 targets are resampled in chunks (bounded memory); the interval is the one all 1,000 resamples at once give
    big = np.random.default_rng(1).random(20_000)
    means = big[np.random.default_rng(0).integers(0, len(big), size=(1000, len(big)))].mean(axis=1)
    assert bootstrap_interval(big) == (float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5)))


def _metrics(method: str, n: int, r: float, nd: float, mrr: float) -> dict:
    m = {"n": n, "recall@10": r, "ndcg@10": nd, "mrr": mrr}
    return {"method": method, "overall": m, "cold_start": m, "warm": m}


def test_table2_gains_over_the_best_baseline_by_hand(tmp_path: Path) -> None:
    """Each metric's gain is over the best baseline of that metric (last-search's R@10 .30, core-trm's N@10 .20 and
    MRR .18); rows on a sample (the LLM's) get no gain; the ceiling fraction divides by the oracle."""
    results = [_metrics("last-search", 100, .30, .15, .12), _metrics("core-trm", 100, .25, .20, .18),
               _metrics("ranker", 100, .45, .30, .27), _metrics("llm-generate-mixup", 20, .5, .5, .5)]
    oracle = {"all": {"n": 100, "exp_recall10": .6, "exp_ndcg10": .4, "exp_mrr": .3}, "coverage": 1.0}
    df = table2(Section("toy", tmp_path, oracle, results=results))
    row = df.set_index("method").loc["ranker"]
    assert row["kind"] == "ranker"
    assert row["recall@10 gain"] == pytest.approx(.45 / .30 - 1) and row["ndcg@10 gain"] == pytest.approx(.5)
    assert row["mrr gain"] == pytest.approx(.27 / .18 - 1) and row["ndcg@10/ceiling"] == pytest.approx(.75)
    assert math.isnan(df.set_index("method").loc["llm-generate-mixup", "ndcg@10 gain"])
    assert math.isnan(df.set_index("method").loc["llm-generate-mixup", "ndcg@10/ceiling"])  # a sample's
    assert df.set_index("method").loc["core-trm", "kind"] == "baseline"
    assert math.isnan(row["ndcg_lo"])  # no rankings.parquet: no interval


def test_table3_reads_our_own_parts_off_table2(tmp_path: Path) -> None:
    """The ranker, then without it (mixup + variants), then without variant selection too (mixup): each row's N@10
    against the ranker's (.15 / .30 = .500x, .12 / .30 = .400x); a dataset without the ranker row has no table."""
    from evaluation.paper import own_parts, write_report

    results = [_metrics("ranker", 100, .45, .30, .27), _metrics("retrieval-mixup", 100, .2, .12, .1),
               _metrics("retrieval-mixup-variants", 100, .25, .15, .13), _metrics("last-search", 100, .3, .15, .12)]
    section = Section("toy", tmp_path, results=results)
    assert [r["method"] for r in own_parts(section).values()] == ["ranker", "retrieval-mixup-variants",
                                                                  "retrieval-mixup"]
    text = write_report(tmp_path, [section]).read_text()
    table = text.split("### Our own parts: toy")[1].split("##")[0]
    assert "| w/o the learned ranker (mixup + variants) | 0.2500 | 0.1500 | 0.1300 | 0.2500 | 0.500x |" in table
    assert "variant selection (mixup, the paper's retrieval) | 0.2000 | 0.1200 | 0.1000 | 0.2000 | 0.400x |" in table
    only = Section("toy", tmp_path, results=results[3:])
    assert "Our own parts" not in write_report(tmp_path, [only]).read_text()


def test_the_ceiling_fraction_is_over_the_targets_the_oracle_covers(tmp_path: Path) -> None:
    """Where the oracle covers 2 of 4 targets, the ranker's fraction of the ceiling is its N@10 over those 2 (ranks 1
    and 3: (1 + 1/log2(4)) / 2 = .75) against the ceiling over them (.5): 1.5, not its N@10 over all 4 (ranks 1, 3,
    20, 20: .375) against it. The LLM sample's comparison rows are kept, marked LLM, with no gain."""
    import pandas as pd

    ts = pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(np.arange(4), unit="h")
    ranks = pd.DataFrame({"user_id": ["a", "b", "c", "d"], "target_item_id": ["i1", "i2", "i3", "i4"],
                          "target_ts": ts, "target_rank": [1, 3, 20, 20], "cold_start": [False] * 4})
    (tmp_path / "eval" / "ranker").mkdir(parents=True)
    ranks.to_parquet(tmp_path / "eval" / "ranker" / "rankings.parquet")
    results = [_metrics("last-search", 4, .25, .1, .1), _metrics("ranker", 4, .5, .375, .40),
               _metrics("llm-sample-base", 2, .5, .4, .3), _metrics("llm-candidates", 2, .5, .2, .1)]
    oracle = {"all": {"n": 2, "exp_recall10": 1.0, "exp_ndcg10": .5, "exp_mrr": .8}, "coverage": .5}
    covered = ranks.iloc[[1, 0]][["user_id", "target_item_id", "target_ts"]]  # any order
    df = table2(Section("toy", tmp_path, oracle, results=results, covered=covered)).set_index("method")
    assert df.loc["ranker", "ndcg@10/ceiling"] == pytest.approx(.75 / .5)
    assert df.loc["ranker", "recall@10/ceiling"] == pytest.approx(1.0)
    assert df.loc["ranker", "mrr/ceiling"] == pytest.approx((1 + 1 / 3) / 2 / .8)
    assert math.isnan(df.loc["last-search", "ndcg@10/ceiling"])  # no per-target ranks: no fraction over the covered
    assert df.loc["llm-sample-base", "kind"] == "LLM" and math.isnan(df.loc["llm-sample-base", "ndcg@10 gain"])
    whole = table2(Section("toy", tmp_path, {**oracle, "coverage": 1.0}, results=results)).set_index("method")
    assert whole.loc["ranker", "ndcg@10/ceiling"] == pytest.approx(.375 / .5)  # full coverage: over every target


def test_the_evaluation_reports_ceiling_fraction_skips_samples_and_partial_oracles() -> None:
    from evaluation.metrics import metrics_table

    results = [_metrics("ranker", 100, .45, .30, .27), _metrics("ranker-llm", 16, .75, .53, .47)]
    oracle = {"all": {"n": 100, "exp_recall10": .6, "exp_ndcg10": .4, "exp_mrr": .3}, "coverage": 1.0}
    fractions = metrics_table(results, oracle).split("Fraction of the ceiling")[1]
    assert "| ranker | 0.750 | 0.750 | 0.900 |" in fractions and "ranker-llm" not in fractions
    partial = metrics_table(results, {**oracle, "coverage": .87})
    assert "Fraction of the ceiling" not in partial and "covers 87% of the test targets" in partial


def _bench_row(method: str, n: int, nd: float) -> dict:
    return {"method": method, "overall": {"n": n, "recall@10": nd + .1, "ndcg@10": nd, "mrr": nd - .05},
            "cold_start": {"n": 1, "recall@10": nd / 2, "ndcg@10": nd / 3, "mrr": nd / 4}}


def test_the_llm_benchmarks_rows_become_table_3s_llm_path(tmp_path: Path) -> None:
    """Rows on every target go against `ranker`, the generation rows against mixup + variants on their own sample;
    the curve's rows (fewer targets) only reach the note; a stopped run says so."""
    from evaluation.paper import write_report
    from evaluation.suite import llm_ablations

    bench = {"complete": False, "targets": 4, "seed": 0, "base_model": "smollm2-135m", "engine": "ctranslate2",
             "rows": [_bench_row("last-search", 4, .12), _bench_row("mixup + variants", 4, .2),
                      _bench_row("ranker", 4, .30), _bench_row("llm-candidates zero-shot", 4, .05),
                      _bench_row("ranker (the curve's 2)", 2, .5),
                      _bench_row("ranker-llm (25% of the budget)", 4, .5), _bench_row("ranker-llm", 4, .33),
                      _bench_row("llm-candidates", 4, .15), _bench_row("llm-generate-mixup", 4, .10),
                      _bench_row("llm-generate-mixup (constrained)", 4, .12),
                      _bench_row("mixup + variants (the generation rows' 4)", 4, .20),
                      _bench_row("llm-generate-mixup w/o product attributes", 4, .08)],
             "curve": [{"share": .25, "steps": 13, "ranker_llm_ndcg@10": .5, "ranker_ndcg@10": .5, "targets": 2}]}
    path, gen = llm_ablations(tmp_path, bench)
    body = json.loads(path.read_text())
    # By name: a curve point or a generation row on as many targets as the benchmark's stays out.
    assert list(body["rows"]) == ["ranker", "ranker-llm", "llm-candidates", "llm-candidates zero-shot",
                                  "mixup + variants", "last-search"] and body["reference"] == "ranker"
    assert "stopped part way" in body["title"] and "25% of the budget (13 steps)" in body["note"]
    assert list(json.loads(gen.read_text())["rows"]) == ["llm-generate-mixup", "llm-generate-mixup (constrained)",
                                                        "mixup + variants (the generation rows' 4)",
                                                        "llm-generate-mixup w/o product attributes"]
    assert "the ablations of generation" in json.loads(gen.read_text())["title"]
    text = write_report(tmp_path, []).read_text()
    ranker_llm = text.split("| ranker-llm |")[1].split("\n")[0]
    assert "| 0.3300 |" in ranker_llm and f"{.33 / .30:.3f}x" in ranker_llm  # N@10 against the ranker's
    no_attributes = text.split("| llm-generate-mixup w/o product attributes |")[1].split("\n")[0]
    assert no_attributes.endswith(f"| {.1396 / .2037:.3f}x |")  # the paper's own drop for that row (its Table 3)
    constrained = text.split("| llm-generate-mixup (constrained) |")[1].split("\n")[0]
    assert f"{.12 / .10:.3f}x" in constrained  # against the full framework, as the paper's column reads
    assert f"{.08 / .10:.3f}x" in no_attributes
    bench["rows"] = [r for r in bench["rows"] if "w/o" not in r["method"]]  # no ablations: against the list it reads
    llm_ablations(tmp_path, bench)
    text = write_report(tmp_path, []).read_text()
    assert f"{.12 / .20:.3f}x" in text.split("| llm-generate-mixup (constrained) |")[1].split("\n")[0]
    bench["rows"] = [r for r in bench["rows"] if not r["method"].startswith(("llm-generate", "mixup + variants ("))]
    assert llm_ablations(tmp_path, bench) == [path] and not gen.exists()  # no generation rows: none left over


def test_the_report_keeps_only_the_figures_it_shows(tmp_path: Path) -> None:
    from evaluation.paper import write_report

    suite = tmp_path / "report" / "suite"
    suite.mkdir(parents=True)
    rows = [{"method": m, "share": s, "ndcg@10": v} for m, s, v in (("ranker", .1, .2), ("ranker", 1., .3))]
    (suite / "low_resource.json").write_text(json.dumps({"rows": rows, "note": "n"}))
    spread = [{"method": "ranker", "seeds": 3, "mean N@10": .30, "sd N@10": .001, "min N@10": .29, "max N@10": .31}]
    (suite / "seeds.json").write_text(json.dumps({"rows": spread, "note": "n"}))
    old = tmp_path / "report" / "fig4-cold-start-a-dataset-since-removed.png"
    old.write_bytes(b"an earlier report's figure")
    text = write_report(tmp_path, []).read_text()
    assert not old.exists() and "](fig6-low-resource.png)" in text and "](fig-seed-spread.png)" in text
    assert sorted(p.name for p in (tmp_path / "report").glob("*.png")) == ["fig-seed-spread.png",
                                                                           "fig6-low-resource.png"]


def test_each_llm_path_ablation_switches_off_exactly_its_parts() -> None:
    """Table 3's rows on llm-generate-mixup: each turns off its prompt segments and maps the answer through its
    retrieval, and leaves the rest of the prompt config as it was."""
    from dataclasses import asdict

    from evaluation.suite import LLM_GENERATION_ABLATIONS, PRETRAINED, llm_generation_ablation
    from models.llm.prompt import PromptConfig

    full = PromptConfig(budget=777, memory_products=5)
    expected = {  # row: (prompt switches off, mode, title list)
        "w/o product attributes": ({"include_attributes"}, "mixup", "memory_first"),
        "w/o query-product memory": ({"include_memory"}, "mixup", "cosine"),
        "w/o text embedding": (set(), "id_only", "memory_first"),
        "w/o ID embedding": (set(), "title_only", "memory_first"),
        "w/o memory & ID embedding": ({"include_memory"}, "title_only", "cosine"),
        "w/o memory & ID & attributes": ({"include_memory", "include_attributes"}, "title_only", "cosine"),
        PRETRAINED: (set(), "mixup", "memory_first"),
    }
    assert set(LLM_GENERATION_ABLATIONS) == set(expected)
    for row, (off, mode, title_list) in expected.items():
        cfg, got_mode, got_list = llm_generation_ablation(row, full)
        changed = {k for k, v in asdict(cfg).items() if v != asdict(full)[k]}
        assert changed == off and all(getattr(cfg, k) is False for k in off), row
        assert (got_mode, got_list) == (mode, title_list), row


@pytest.mark.slow
class TestOnTheSampleRun:
    @pytest.fixture(scope="class")
    def ablation(self, sample_workdir: Path) -> dict:
        from evaluation.suite import ranker_feature_groups

        return json.loads(ranker_feature_groups(sample_workdir, groups=("seen flags",), progress=False,
                                                log=lambda _: None).read_text())

    @pytest.fixture(scope="class")
    def retrieval(self, sample_workdir: Path) -> dict:
        from evaluation.suite import retrieval_ablation

        # all-MiniLM-L6-v2 over the sample's 42k titles takes minutes here: the suite runs that row.
        return json.loads(retrieval_ablation(sample_workdir, pretrained=False, progress=False,
                                             log=lambda _: None).read_text())

    def test_the_retrieval_ablations_reproduce_their_table2_rows(self, retrieval: dict, sample_workdir: Path) -> None:
        """The ablation's full row is the `retrieval-mixup-variants` asset's configuration, and removing the ID
        embedding is `retrieval-title-only-variants`: the same metrics, float for float. Removing the memory
        changes the answer."""
        from evaluation.suite import RETRIEVAL_ROWS

        rows = retrieval["rows"]
        assert list(rows) == list(RETRIEVAL_ROWS)
        for name, method in (("mixup + variants", "retrieval-mixup-variants"),
                             ("w/o ID embedding", "retrieval-title-only-variants")):
            saved = json.loads((sample_workdir / "eval" / method / "metrics.json").read_text())
            assert rows[name]["overall"] == saved["overall"] and rows[name]["cold_start"] == saved["cold_start"]
        assert rows["w/o query-product memory"]["overall"] != rows["mixup + variants"]["overall"]
        assert rows["w/o text embedding"]["cold_start"]["recall@10"] < rows["mixup + variants"]["cold_start"][
            "recall@10"]  # the ID list alone has no cold item

    def test_the_refit_on_every_feature_is_the_saved_rankers_evaluation(self, ablation: dict,
                                                                        sample_workdir: Path) -> None:
        """The ablation's `ranker` row refits the saved ranker (same examples, seed, threads) and ranks the test
        targets from the precomputed candidates: its metrics equal the `ranker_eval` asset's, float for float."""
        saved = json.loads((sample_workdir / "eval" / "ranker" / "metrics.json").read_text())
        row = ablation["rows"]["ranker"]
        assert saved["overall"]["n"] > 100 and row["overall"] == saved["overall"]
        assert row["cold_start"] == saved["cold_start"] and row["features"] == len(FEATURE_NAMES)
        less = ablation["rows"]["ranker w/o seen flags"]
        assert less["features"] == len(FEATURE_NAMES) - 4 and less["dropped"] == list(FEATURE_GROUPS["seen flags"])
        assert less["overall"]["n"] == saved["overall"]["n"]

    def test_the_report_regenerates_byte_identically(self, ablation: dict, retrieval: dict,
                                                     sample_workdir: Path) -> None:
        def run() -> dict[str, bytes]:
            result = CliRunner().invoke(cli, ["report", "--workdir", str(sample_workdir)])
            assert result.exit_code == 0, result.output
            return {p.name: p.read_bytes() for p in sorted((sample_workdir / "report").glob("*.*"))}

        gone = sample_workdir / "report" / "fig4-cold-start-a-section-since-removed.png"
        gone.parent.mkdir(parents=True, exist_ok=True)
        gone.write_bytes(b"an earlier report's figure")
        first, second = run(), run()
        assert first == second and "index.md" in first and any(n.endswith(".png") for n in first)
        assert gone.name not in first  # the report shows every figure it keeps
        text = first["index.md"].decode()
        methods = [json.loads(p.read_text())["method"] for p in (sample_workdir / "eval").glob("*/metrics.json")]
        table = text.split("## Table 3")[0]
        for m in methods:
            assert f"| {m} |" in table, m  # the LLM sample's comparison rows too, beside the LLM rows
        assert "The LLM rows are on a seeded sample of 2 test targets" in table
        assert "ranker w/o seen flags" in text and "w/o query-product memory" in text  # the suite's ablations
        saved = json.loads((sample_workdir / "eval" / "ranker" / "metrics.json").read_text())
        best = max(json.loads((sample_workdir / "eval" / b / "metrics.json").read_text())["overall"]["ndcg@10"]
                   for b in ("last-search", "popularity", "core-trm"))
        assert f"{saved['overall']['ndcg@10'] / best - 1:+.1%}" in table.split("| ranker |")[1].split("\n")[0]

    def test_zero_shots_title_model_on_every_category_is_the_workdirs_own(self, sample_workdir: Path) -> None:
        """Zero-shot's "trained on all" side fits its title model as the `title_model` asset does (the workdir's
        epochs, seed and training users): on every category's purchases it reproduces the saved val fit, weight for
        weight; on one category's purchases it trains on fewer pairs."""
        import torch

        from evaluation.suite import title_fit
        from feature_repo.layout import Layout
        from models.text.train import load_title_model

        lay = Layout(sample_workdir)
        model, pairs = title_fit(lay, "val")
        saved = load_title_model(lay.at("val").title_model).model.state_dict()
        ours = model.model.state_dict()
        assert saved.keys() == ours.keys() and all(torch.equal(saved[k], ours[k]) for k in saved)
        train_result = json.loads((lay.at("val").title_model / "train_result.json").read_text())
        assert pairs == train_result["n_pairs"]
        _, footwear = title_fit(lay, "val", "Footwear")
        assert 0 < footwear < pairs

    def test_report_needs_an_evaluated_workdir(self, tmp_path: Path) -> None:
        result = CliRunner().invoke(cli, ["report", "--workdir", str(tmp_path)])
        text = re.sub(r"[\s│╭╮╰╯─]+", " ", result.output)  # the error box wraps the message
        assert result.exit_code == 2 and "holds no evaluation" in text, result.output



@pytest.mark.parametrize(("args", "message"), [
    (["--dataset", "hm=."], "needs --suite"),
    (["--suite", "--dataset", "seeds=."], "NAME must be"),
    (["--suite", "--dataset", "a/b=."], "NAME must be"),
    (["--suite", "--dataset", "hm=.:parquet"], "unknown format 'parquet'"),
    (["--suite", "--dataset", "hm=/no/such/folder"], "existing DIR"),
])
def test_report_refuses_a_bad_dataset_before_running_anything(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "eval").mkdir()
    (tmp_path / "splits").mkdir()
    result = CliRunner().invoke(cli, ["report", "--workdir", str(tmp_path), *args])
    text = re.sub(r"[\s│╭╮╰╯─]+", " ", result.output)
    assert result.exit_code == 2 and message in text, result.output
    assert not (tmp_path / "paper").exists() and not (tmp_path / "report").exists()


def test_a_suite_part_is_stale_once_a_model_it_read_changes(tmp_path: Path) -> None:
    from evaluation.paper import stale_inputs
    from evaluation.suite import inputs_digest

    model = tmp_path / "models" / "ranker"
    model.mkdir(parents=True)
    (model / "ranker.json").write_text("{}")
    body = {"inputs": inputs_digest(tmp_path, [model])}
    assert list(body["inputs"]) == ["models/ranker"] and stale_inputs(tmp_path, body) == []
    (model / "ranker.json").write_text('{"refitted": 1}')
    assert stale_inputs(tmp_path, body) == ["models/ranker"]
    (model / "ranker.json").unlink()
    model.rmdir()
    assert stale_inputs(tmp_path, body) == ["models/ranker"] and stale_inputs(tmp_path, {}) == []


def test_the_suites_reruns_carry_the_workdirs_protocol(tmp_path: Path) -> None:
    """A seed or low-resource rerun gets the workdir's protocol, refit interval and test-target sample as options."""
    from evaluation.suite import _protocol_args

    (tmp_path / "splits").mkdir()
    info = {"protocol": "temporal", "refits": ["2024-01-15T00:00:00+00:00", "2024-01-01T00:00:00+00:00"],
            "test_targets": {"kept": 500, "of": 2000, "seed": 0}}
    (tmp_path / "splits" / "protocol.json").write_text(json.dumps(info))
    assert _protocol_args(tmp_path) == ["--protocol", "temporal", "--refit-every-days", "14", "--max-test-targets",
                                        "500"]
    info |= {"protocol": "loo", "test_targets": {"kept": 2000, "of": 2000, "seed": 0}}
    (tmp_path / "splits" / "protocol.json").write_text(json.dumps(info))
    assert _protocol_args(tmp_path) == ["--protocol", "loo", "--max-test-targets", "0"]
