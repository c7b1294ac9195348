"""The evaluation report: one markdown table over every method's metrics.json."""

import base64
import json
from pathlib import Path

import pandas as pd
from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from evaluation.metrics import metrics_table, oracle_covered, targets_ceiling
from evaluation.paper import Section, write_report
from feature_repo.layout import Layout
from feature_repo.moments import dataset_resolution, resolution_note
from feature_repo.splits import held_out_phrase, read_protocol, read_refits
from orchestration.assets.evaluation import METHOD_ASSETS, per_category_table, read_results
from orchestration.assets.llm import llm_eval, ranker_llm_eval
from orchestration.assets.ranking import ranker_eval
from orchestration.assets.seqrec import SEQREC_ASSETS
from orchestration.assets.text import retrieval_evals
from orchestration.resources import DatasetResource, WorkdirResource

REPORTED = [*METHOD_ASSETS, *SEQREC_ASSETS.values(), retrieval_evals, ranker_eval, llm_eval,
            ranker_llm_eval]


@asset(group_name="evaluation", deps=REPORTED, description="Markdown report: every method, overall/per category/cold")
def evaluation_report(context: AssetExecutionContext, workdir: WorkdirResource, dataset: DatasetResource):
    results = read_results(workdir.eval)
    protocol, cuts = read_protocol(workdir.layout.splits)
    targets = pd.read_parquet(workdir.layout.targets)
    test = targets[targets["split"] == "test"]
    oracle = targets_ceiling(dataset.path if dataset.format == "canonical" else None, test, protocol)
    resolution = dataset_resolution(workdir.canonical)
    text = "\n\n".join([
        f"# Evaluation report\n\nDataset: `{dataset.path}` ({dataset.format}). {resolution_note(resolution)} "
        f"{protocol_line(protocol, cuts, read_refits(workdir.layout.splits))} "
        f"{held_out_phrase(workdir.layout.splits, len(test))}, {test['cold_start'].mean():.1%} cold-start (nobody "
        "had clicked or bought the "
        "item before the target's time). Each is ranked among the items of its category released by its time; "
        "ties count against the target." + (f" Ceiling: mean of the oracle's exp_* over these targets "
                                            f"(coverage {oracle['coverage']:.0%})." if oracle and "coverage" in oracle
                                            else ""),
        "## Overall and cold-start", metrics_table(results, oracle, basket=resolution == "day")
        + basket_note(resolution, test, results) + llm_note(results, workdir.layout),
        "## Per category", per_category_table(results, oracle),
    ])
    path = workdir.layout.ensure(workdir.layout.eval / "report.md")
    path.write_text(text + "\n")
    context.log.info(f"wrote {path}")
    return MaterializeResult(metadata={"report": MetadataValue.md(text), "path": MetadataValue.path(str(path)),
                                       "protocol": protocol})


def basket_note(resolution: str, test: pd.DataFrame, results: list[dict]) -> str:
    """Under the table, on day-resolution data: what the basket hit rate counts, and how many baskets there are."""
    if resolution != "day" or "moment_items" not in test:
        return ""
    multi = float((test["moment_items"].map(len) > 1).mean()) if len(test) else float("nan")
    same_cat = next((r["basket"]["multi_item_share"] for r in results if "basket" in r), float("nan"))
    return (f"\n\nbasket HR@10: the share of targets with any item the user bought on the target's day (the target "
            f"included) in the top 10 of the target's category. {multi:.1%} of the test targets' days hold more than "
            f"one item, {same_cat:.1%} another item of the target's category.")


def llm_note(results: list[dict], layout: Layout | None = None) -> str:
    """Under the table: which model the llm-* rows used, on which sample, and how much the LLM stage trained."""
    llm = [r for r in results if r["method"].startswith("llm-") or r["method"].startswith("ranker-")]
    if not llm:
        return ""
    r = llm[0]
    return (f"\n\nThe llm-* and ranker-llm rows: base model `{r.get('llm_base_model')}` on "
            f"`{r.get('llm_engine')}`, prompt `{r.get('prompt_version')}`, on {r.get('llm_sample')}; "
            "`llm-sample-base` is the mixup + variants list the llm-* rows read, `ranker-on-llm-sample` the ranker "
            "(ranker-llm's first pass), on the same targets." + (f" {llm_stage_line(layout)}" if layout else ""))


def llm_stage_line(layout: Layout) -> str:
    """How much the LLM stage trained (from the adapter's and the second pass's metadata), and where its measure of
    record is; empty without an adapter."""
    meta_path = layout.llm_adapter / "llm_meta.json"
    if not meta_path.exists():
        return ""
    meta = json.loads(meta_path.read_text())
    line = (f"LLM stage: the adapter trained {meta.get('steps', 0)} steps on {meta.get('examples_seen', 0)} prompts "
            f"in {meta.get('seconds', 0):.0f} s (format violations {meta.get('format_violation_before', float('nan')):.2f}"
            f" -> {meta.get('format_violation_after', float('nan')):.2f})")
    second = layout.ranker_llm / "ranker.json"
    if second.exists():
        info = json.loads(second.read_text()).get("info", {})
        kept = info.get("kept_first_pass")
        line += (f"; ranker-llm's second pass on {info.get('validation_lists', info.get('groups', 0))} validation "
                 "lists" + (" kept the ranker's order (it did not beat it on lists it had not seen)" if kept else
                            " (it beat the ranker's order on lists it had not seen)"))
    return (line + ". These are CPU-sized samples, a smoke test of the stage; the measure of record is "
            "`benchmarks/llm.py` (docs/llm.md).")


def protocol_line(protocol: str, cuts: dict, refits: tuple = ()) -> str:
    """One sentence naming the protocol, its cut dates and the test period's refits."""
    if protocol == "temporal":
        rolling = ""
        if len(refits) > 1:
            days = (refits[1] - refits[0]) / pd.Timedelta(days=1)
            rolling = (f" the ID model is refitted every {days:g} days from the test cut ({len(refits)} fits), each test "
                       "target scored by the latest fit before it;")
        return (f"Protocol: temporal (training before {cuts['val']:%Y-%m-%d %H:%M}, validation targets until "
                f"{cuts['test']:%Y-%m-%d %H:%M}, test targets after; the ID and title models that score the test "
                f"targets are refitted on everything before them;{rolling} the rankers are trained on the "
                "validation targets).")
    return ("Protocol: leave-one-out (per user; training holds other users' later events; the ID and title models "
            "that score the test targets are refitted on each user's events before them).")


PAPER_DATASETS = "paper"  # under a workdir: more datasets' workdirs for Table 2 (`fashionrec report --suite`)


def paper_section(workdir: Path, name: str | None = None, data: Path | None = None) -> Section:
    """A workdir the graph ran into as one dataset of the paper report: its name, ceiling and protocol line. `data`:
    the dataset folder (for the oracle); by default the source its canonical tables record, where it still exists."""
    lay = Layout(workdir)
    info = json.loads((lay.canonical / "dataset.json").read_text()) if (lay.canonical / "dataset.json").exists() \
        else {}
    source = Path(data) if data is not None else Path(info["source"]) if info.get("source") else None
    protocol, cuts = read_protocol(lay.splits)
    targets = pd.read_parquet(lay.targets)
    test = targets[targets["split"] == "test"]
    fmt = info.get("format", "canonical")
    data_dir = source if fmt == "canonical" and source is not None and source.exists() else None
    oracle = targets_ceiling(data_dir, test, protocol)
    covered = oracle_covered(data_dir, test) if oracle and oracle.get("coverage", 1.0) < 1 else None
    note = (f"{resolution_note(dataset_resolution(lay.canonical))} {protocol_line(protocol, cuts, read_refits(lay.splits))}"
            f" {held_out_phrase(lay.splits, len(test))}, {test['cold_start'].mean():.1%} cold-start."
            + (" Ceiling (the oracle's exp_* over these targets, coverage {:.0%}): R@10 {:.4f}, N@10 {:.4f}, MRR {:.4f}."
               .format(oracle.get("coverage", float("nan")), *(oracle["all"][f"exp_{m}"] for m in
                                                                ("recall10", "ndcg10", "mrr")))
               if oracle and "all" in oracle else " The dataset ships no ceiling for these targets.")
            + (f" The oracle covers {len(covered):,} of the {len(test):,} test targets: each method's fraction of "
               "the ceiling is over those alone." if covered is not None else ""))
    return Section(name or (source.name if source is not None else Path(workdir).name), Path(workdir), oracle, note,
                   covered=covered)


def paper_sections(workdir: Path, data: Path | None = None) -> list[Section]:
    """The workdir's own dataset first, then each dataset the suite ran under `workdir/paper/<name>` (by name)."""
    out = [paper_section(workdir, data=data)]
    extra = Path(workdir) / PAPER_DATASETS
    for d in sorted(extra.iterdir()) if extra.exists() else []:
        if (d / "eval").exists() and (d / "splits").exists():
            out.append(paper_section(d, name=d.name))
    return out


@asset(group_name="evaluation", deps=[evaluation_report],
       description="The paper's section 5 as one report (report/index.md): Table 2 per dataset, the ablations, the "
                   "cold-start figure; `fashionrec report --suite` adds what needs more runs")
def paper_report(context: AssetExecutionContext, workdir: WorkdirResource, dataset: DatasetResource):
    data = Path(dataset.path) if dataset.format == "canonical" else None
    path = write_report(workdir.layout.root, paper_sections(workdir.layout.root, data))
    text = path.read_text()
    pngs = sorted(path.parent.glob("*.png"))
    inline = "\n\n".join(f"![{p.stem}](data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()})"
                         for p in pngs)
    context.log.info(f"wrote {path}")
    return MaterializeResult(metadata={"report": MetadataValue.md(text), "figures": MetadataValue.md(inline or "none"),
                                       "path": MetadataValue.path(str(path))})
