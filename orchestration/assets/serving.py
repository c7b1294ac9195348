"""The serving bundle: everything `fashionrec serve` reads, published as one registry version."""

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from orchestration.assets.data import canonical_tables, feature_tables
from orchestration.assets.llm import llm_adapter, llm_engine, ranker_llm
from orchestration.assets.ranking import ranker
from orchestration.assets.seqrec import ID_MODEL, id_embeddings
from orchestration.assets.text import item_title_embeddings, query_memory, variant_ranker
from orchestration.jobs import STORE_TAG
from orchestration.resources import QdrantResource, WorkdirResource


@asset(group_name="serving", op_tags={STORE_TAG: "qdrant"},
       deps=[canonical_tables, feature_tables, id_embeddings, item_title_embeddings, query_memory, variant_ranker,
             ranker, llm_adapter, llm_engine, ranker_llm],
       description="Catalog, search log, activity windows, best sellers, ID/title models, variant ranker, learned "
                   "ranker, LLM adapter and its CTranslate2 conversion, ranker-llm's second pass, and vector "
                   "collections, published as one "
                   "self-contained version under registry/serving/ with its manifest; serving swaps to it without a "
                   "restart")
def serving_bundle(context: AssetExecutionContext, workdir: WorkdirResource, qdrant: QdrantResource):
    from serving.bundle import publish_bundle

    layout = workdir.layout
    needed = [layout.model(ID_MODEL), layout.title_model]
    if missing := [str(p.relative_to(layout.root)) for p in needed if not p.exists()]:
        context.log.warning(f"no serving bundle published: {missing} not built in this workdir (the text side or "
                            f"{ID_MODEL} was left out of the run)")
        return MaterializeResult(metadata={"published": False, "missing": MetadataValue.json(missing)})
    version = publish_bundle(layout.root, ID_MODEL, reason=f"run {context.run_id}", collections=qdrant.collections)
    context.log.info(f"serving bundle {version.version} published at {version.path}")
    m = version.manifest
    return MaterializeResult(metadata={
        "published": True, "version": version.version, "path": MetadataValue.path(str(version.path)),
        "artefacts": MetadataValue.json(m["artefacts"]), "data": MetadataValue.json(m["data"]),
        "metrics": MetadataValue.json(m["metrics"]),
    })
