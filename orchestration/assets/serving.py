"""The serving bundle: the artefacts `fashionrec serve` reads, published as one registry version."""

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from orchestration.assets.llm import llm_adapter
from orchestration.assets.seqrec import ID_MODEL, id_embeddings
from orchestration.assets.text import item_title_embeddings, query_memory, variant_ranker
from orchestration.resources import WorkdirResource


@asset(group_name="serving", deps=[id_embeddings, item_title_embeddings, query_memory, variant_ranker, llm_adapter],
       description="Catalog, ID/title models, variant ranker, LLM adapter and vector collections, published as one "
                   "version under registry/serving/ with its manifest; serving swaps to it without a restart")
def serving_bundle(context: AssetExecutionContext, workdir: WorkdirResource):
    from serving.bundle import publish_bundle

    version = publish_bundle(workdir.root, ID_MODEL, reason=f"run {context.run_id}")
    context.log.info(f"serving bundle {version.version} published at {version.path}")
    m = version.manifest
    return MaterializeResult(metadata={
        "version": version.version, "path": MetadataValue.path(str(version.path)),
        "artefacts": MetadataValue.json(m["artefacts"]), "data": MetadataValue.json(m["data"]),
        "metrics": MetadataValue.json(m["metrics"]),
    })
