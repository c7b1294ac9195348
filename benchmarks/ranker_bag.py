"""The ranker's bag against fewer boosters: N@10 on the test targets beside the predict cost, LightGBM and compiled.

On a workdir `fashionrec run` wrote (medium-s0 for the serving issue), the saved bag (`models/ranker/`) is scored
as the `ranker` row scores it (`ranker_scorer` over every test target) with its first 1, 2, ... boosters, and the
predict of each is timed on the same candidate matrices (those of the first `--timed` targets), through LightGBM's
own predict and through the compiled bag that serving uses (`models.ranker.compiled`; the same floats).

    python benchmarks/ranker_bag.py --workdir /tmp/wmed [--sizes 1,2,5] [--timed 200]
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer


def main(workdir: Annotated[Path, typer.Option(help="A workdir `fashionrec run` wrote")],
         sizes: Annotated[str, typer.Option(help="Bag sizes (first boosters of the saved bag)")] = "1,2,5",
         timed: Annotated[int, typer.Option(help="Targets whose candidate matrices are timed")] = 200) -> None:
    from evaluation.factories import as_of_memory, ranker_scorer
    from evaluation.metrics import evaluate
    from evaluation.periods import by_fit
    from feature_repo.layout import Layout
    from models.ranker.model import LearnedRanker
    from orchestration.resources import WorkdirResource

    wd = WorkdirResource(workdir=str(workdir.resolve()))
    lay = Layout(workdir.resolve())
    catalog = wd.catalog()
    full = LearnedRanker.load(lay.ranker)
    memory = as_of_memory(lay)
    targets = lay.test_targets()
    rows = []
    captured: list[np.ndarray] = []
    for n in [int(s) for s in sizes.split(",")]:
        model = LearnedRanker(full.boosters[:n], full.features, full.cfg)
        scorer = by_fit(lay, lambda fit, m=model: ranker_scorer(fit, catalog, m, memory=memory))
        if not captured:  # the candidate matrices of the first targets, as the test fit's stage builds them
            stage = ranker_scorer(lay, catalog, model, memory=memory)
            for i in range(min(timed, len(targets))):
                batch = targets.iloc[[i]]
                ranked, _ = stage.ranked_rows(batch, catalog.rows[batch["category"].iloc[0]])
                captured.append(ranked[0].features[:, stage.stage._columns()])
        t0 = time.perf_counter()
        metrics = evaluate(f"ranker-{n}", scorer, targets, catalog).metrics["overall"]
        eval_s = time.perf_counter() - t0
        cost = {}
        for engine in ("lightgbm", "compiled"):
            model.compiled = None
            if engine == "compiled":
                model.compile()
            ms = []
            for x in captured:
                t = time.perf_counter()
                model.score(x)
                ms.append((time.perf_counter() - t) * 1e3)
            cost[engine] = float(np.median(ms))
        rows.append((n, metrics["ndcg@10"], metrics["recall@10"], cost["lightgbm"], cost["compiled"], eval_s))
    base = rows[-1]
    mean_cands = np.mean([len(x) for x in captured])
    print(f"\n{workdir}: {len(targets)} test targets; predict timed on {len(captured)} candidate matrices "
          f"(mean {mean_cands:.0f} candidates), median ms\n")
    print("| boosters | N@10 | R@10 | N@10 vs the bag | LightGBM ms | compiled ms | compiled vs the bag's LightGBM |")
    print("|---|---|---|---|---|---|---|")
    for n, ndcg, rec, lgb_ms, comp_ms, _ in rows:
        print(f"| {n} | {ndcg:.4f} | {rec:.4f} | {ndcg / base[1]:.3f}x | {lgb_ms:.2f} | {comp_ms:.2f} | "
              f"{comp_ms / base[3]:.3f}x |")


if __name__ == "__main__":
    typer.run(main)
