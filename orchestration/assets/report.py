"""The evaluation report: one markdown table over every method's metrics.json."""

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from models.evaluation import load_oracle, metrics_table
from orchestration.assets.evaluation import METHOD_ASSETS, per_category_table, read_results
from orchestration.assets.seqrec import SEQREC_ASSETS
from orchestration.assets.text import RETRIEVAL_ASSETS
from orchestration.resources import DatasetResource, WorkdirResource

REPORTED = [*METHOD_ASSETS, *SEQREC_ASSETS.values(), *RETRIEVAL_ASSETS.values()]


@asset(group_name="evaluation", deps=REPORTED, description="Markdown report: every method, overall/per category/cold")
def evaluation_report(context: AssetExecutionContext, workdir: WorkdirResource, dataset: DatasetResource):
    results = read_results(workdir.eval)
    oracle = load_oracle(dataset.path if dataset.format == "canonical" else None)
    text = "\n\n".join([
        f"# Evaluation report\n\nDataset: `{dataset.path}` ({dataset.format}). Test targets ranked among all items "
        "of their category; ties count against the target.",
        "## Overall and cold-start", metrics_table(results, oracle),
        "## Per category", per_category_table(results, oracle),
    ])
    path = workdir.path("eval", "report.md")
    path.write_text(text + "\n")
    context.log.info(f"wrote {path}")
    return MaterializeResult(metadata={"report": MetadataValue.md(text), "path": MetadataValue.path(str(path))})
