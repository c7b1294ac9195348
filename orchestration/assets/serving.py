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

    needed = [workdir.root / "models" / f"{ID_MODEL}.pt", workdir.root / "models" / "title"]
    if missing := [str(p.relative_to(workdir.root)) for p in needed if not p.exists()]:
        context.log.warning(f"no serving bundle published: {missing} not built in this workdir (the text side or "
                            f"{ID_MODEL} was left out of the run)")
        return MaterializeResult(metadata={"published": False, "missing": MetadataValue.json(missing)})
    version = publish_bundle(workdir.root, ID_MODEL, reason=f"run {context.run_id}")
    context.log.info(f"serving bundle {version.version} published at {version.path}")
    m = version.manifest
    return MaterializeResult(metadata={
        "published": True, "version": version.version, "path": MetadataValue.path(str(version.path)),
        "artefacts": MetadataValue.json(m["artefacts"]), "data": MetadataValue.json(m["data"]),
        "metrics": MetadataValue.json(m["metrics"]),
    })
