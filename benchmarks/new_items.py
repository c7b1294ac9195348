"""Where a new item is lost: a shopper with no history types a new product's name, and the ranking stage answers.

For a seeded sample of items released in the test window, one probe each, at one hour after the item's release
(the day it arrives: no activity window holds it yet), in its category, with no history:
- `title`: the query is the item's exact title;
- `name`: the title without its colour and size words (the name a shopper would type); a hit is any variant of
  its family in the top 10.

Each probe goes through the evaluation's ranking stage (`evaluation.factories.ranker_scorer`, tested equal to the
service), with the workdir's trained ranker and the ID/title fit of its period. The table follows the item through
the candidate sources (its title-cosine rank in the category, and which sources hold it: the title list's top 30,
the memory's products, the variant expansion, ...), the features a new item gets (age, popularity, the query
match) and the final order (the item's rank, its family's best rank, and the score gap to the first item).

    python benchmarks/new_items.py --workdir /tmp/wmed [--n 30] [--seed 0] [--json out.json]
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import numpy as np
import pandas as pd
import typer

from evaluation.factories import as_of_memory, ranker_scorer
from evaluation.periods import by_fit, split
from evaluation.ranking import product_name
from models.ranker.candidates import SOURCES
from models.ranker.features import FEATURE_NAMES
from models.ranker.model import LearnedRanker
from orchestration.resources import WorkdirResource


def probes(items: pd.DataFrame, events: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp, n: int, seed: int,
           delay: pd.Timedelta = pd.Timedelta(hours=1)) -> pd.DataFrame:
    """`n` seeded items released in [start, end - 1 day) that nobody touched before release + `delay`, each as
    one no-history target row (the evaluation's target columns) per query kind."""
    created = pd.to_datetime(items["created_at"], utc=True)
    fresh = items[(created >= start) & (created < end - pd.Timedelta(days=1))].copy()
    fresh["t"] = pd.to_datetime(fresh["created_at"], utc=True) + delay
    touched = events[events["item_id"].isin(fresh["item_id"])].groupby("item_id")["timestamp"].min()
    first = pd.to_datetime(fresh["item_id"].map(touched), utc=True)
    fresh = fresh[first.isna() | (first >= fresh["t"])]
    pick = fresh.sample(min(n, len(fresh)), random_state=seed)
    out = []
    for r in pick.itertuples(index=False):
        for kind, q in (("title", str(r.title)), ("name", product_name(r.title, r.color, r.size))):
            ms = int(r.t.value // 1_000_000)
            out.append({"user_id": f"probe-{r.item_id}", "split": "test", "target_item_id": r.item_id,
                        "target_ts": r.t, "category": r.category, "kind": kind, "query": q,
                        "family_id": r.family_id, "seq_actions": ["search"], "seq_item_ids": [""],
                        "seq_queries": [q], "seq_search_ids": [-1], "seq_timestamps": [ms - 1000]})
    return pd.DataFrame(out)


def follow(scorer, catalog, batch: pd.DataFrame) -> list[dict]:  # noqa: ANN001
    """Per probe: where its item is in each source and in the ranked answer."""
    cat_rows = catalog.rows[batch["category"].iloc[0]]
    target = catalog.index_of(batch["target_item_id"])
    demote = np.searchsorted(cat_rows, target)
    ranked, title_cos = scorer.ranked_rows(batch, cat_rows, demote)
    attrs = scorer.ctx.attrs
    out = []
    for b, (r, row) in enumerate(zip(ranked, batch.itertuples(index=False), strict=True)):
        live = attrs.created_ns[cat_rows] <= int(pd.Timestamp(row.target_ts).value)  # the item itself included
        cos_rank = int(((title_cos[b] >= title_cos[b, demote[b]]) & live).sum())  # ties count against it
        c = r.candidates
        at = np.flatnonzero(c.rows == target[b])
        src = [s for s in SOURCES if len(at) and c.ranks[s][at[0]] >= 0]
        fam = attrs.family[target[b]]
        pos = np.flatnonzero(r.rows == target[b])
        fam_pos = np.flatnonzero(attrs.family[r.rows] == fam)
        x = r.features[at[0]] if len(at) else np.full(len(FEATURE_NAMES), np.nan)
        out.append({
            "item": row.target_item_id, "kind": row.kind, "query": row.query,
            "title_cos_rank": cos_rank, "candidate": bool(len(at)), "sources": "+".join(src) or "-",
            "rank": int(pos[0]) + 1 if len(pos) else None, "family_rank": int(fam_pos[0]) + 1 if len(fam_pos) else None,
            "n_candidates": len(c.rows), **{k: float(x[FEATURE_NAMES.index(k)]) for k in ("age_days", "pop_30d", "query_overlap", "query_coverage")},
            "score_gap": float(r.scores[0] - r.scores[pos[0]]) if len(pos) else None})
    return out


def main(workdir: Annotated[Path, typer.Option(help="A finished workdir (`fashionrec run`)")] = Path("work"),
         n: Annotated[int, typer.Option(help="New items sampled")] = 30,
         seed: Annotated[int, typer.Option(help="Sampling seed")] = 0,
         json_out: Annotated[Path | None, typer.Option("--json", help="Write the per-probe rows here")] = None,
         ) -> None:
    wd = WorkdirResource(workdir=str(workdir))
    catalog = wd.catalog()
    test = wd.layout.test_targets()
    events = pd.read_parquet(wd.layout.events, columns=["item_id", "timestamp"])
    batch = probes(catalog.items, events, test["target_ts"].min(), test["target_ts"].max(), n, seed)
    model = LearnedRanker.load(wd.layout.ranker)
    memory = as_of_memory(wd.layout)
    scorer = by_fit(wd.layout, lambda lay: ranker_scorer(lay, catalog, model, memory=memory))
    rows: list[dict] = []
    for _, part in batch.groupby(["kind", "category"], sort=False):
        for fit, at in split(scorer, part):
            rows += follow(fit, catalog, part.iloc[at])
    df = pd.DataFrame(rows)
    summary = {}
    for kind in ("title", "name"):
        d = df[df["kind"] == kind]
        hit = (d["rank" if kind == "title" else "family_rank"] <= 10).fillna(False)
        summary[kind] = {"top10": int(hit.sum()), "n": len(d)}
        typer.echo(f"\n## query = {'exact title' if kind == 'title' else 'name without colour and size'} "
                   f"({len(d)} new items, no history, category given)")
        typer.echo(d.drop(columns=["kind"]).to_markdown(index=False, floatfmt=".3g"))
        typer.echo(f"\nin the top 10 ({'the item' if kind == 'title' else 'its family'}): {int(hit.sum())}/{len(d)}; "
                   f"a candidate: {int(d['candidate'].sum())}/{len(d)}; title-cosine rank <= 30: "
                   f"{int((d['title_cos_rank'] <= 30).sum())}/{len(d)}")
    if json_out:
        json_out.write_text(df.to_json(orient="records", indent=1))
    typer.echo(json.dumps(summary))


if __name__ == "__main__":
    typer.run(main)
