"""Does a short LoRA budget teach the two-line answer format? A learning-rate sweep on a workdir's training prompts.

Reads `<workdir>/llm/train_prompts.parquet` (the `llm_prompts` asset), holds out the last `--check` generation
prompts, fine-tunes a fresh LoRA adapter on the rest for `--seconds` at each learning rate (bf16 autocast on a CPU
with native bf16), and generates the held-out answers with the paper's sampling settings. Prints one row per rate:
steps, loss first and last, the share of well-formed answers, exact hits, and the first answers.

    python benchmarks/llm_format.py --workdir W [--lrs 2e-4,1e-3,3e-3,1e-2] [--seconds 60] [--check 6]

On the bundled sample (6 steps in 60 s) no rate gave a well-formed answer; docs/results.md, "Why the default run's
format check stays at 1.00".
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import numpy as np
import pandas as pd
import torch
import typer

from models.llm.engine import native_bf16
from models.llm.generate import GenerateConfig, generate
from models.llm.model import add_lora, load_llm
from models.llm.prompt import Prompt, parse_answer
from models.llm.train import LLMTrainConfig, fine_tune


def main(workdir: Annotated[Path, typer.Option(help="A workdir the llm group ran into")] = Path("work"),
         lrs: Annotated[str, typer.Option(help="Learning rates, comma-separated")] = "2e-4,1e-3,3e-3,1e-2",
         seconds: Annotated[float, typer.Option(help="Training time per rate")] = 60.0,
         check: Annotated[int, typer.Option(help="Held-out generation prompts")] = 6,
         model: Annotated[str, typer.Option(help="Base LLM")] = "smollm2-135m") -> None:
    df = pd.read_parquet(workdir / "llm" / "train_prompts.parquet")
    df = df[df["kind"].isin(["generate", "candidates"])]  # the asset's own held-out `check` prompts stay out
    held = df[df["kind"] == "generate"].tail(check)
    train = df.drop(held.index)
    prompts = [Prompt(t, r, int(n), 0, int(d)) for t, r, n, d in
               zip(train["text"], train["response"], train["n_tokens"], train["n_dropped"], strict=True)]
    bf16 = not torch.cuda.is_available() and native_bf16()
    typer.echo(f"{model}: {len(prompts)} training prompts, {len(held)} held out, {seconds:g} s per rate, "
               f"bf16 autocast {bf16}")
    typer.echo("| lr | steps | loss first -> last | well-formed | exact | seconds | first answers |\n"
               "|---|---|---|---|---|---|---|")
    for lr in (float(x) for x in lrs.split(",")):
        m = add_lora(load_llm(model))
        cfg = LLMTrainConfig(lr=lr, batch_size=4, max_seconds=seconds, mixed_bf16=bf16, progress=False)
        t0 = time.perf_counter()
        res = fine_tune(m.model, m.tokenizer, prompts, cfg, list(range(len(prompts))))
        out = generate(m.model, m.tokenizer, list(held["text"]), GenerateConfig(max_new_tokens=64, batch_size=8))
        parsed = [parse_answer(o) for o in out]
        exact = [p.item_id == r.split("\n")[0].removeprefix("ID: ") for p, r in zip(parsed, held["response"],
                                                                                     strict=True)]
        first = "; ".join(repr(o.strip()[:40]) for o in out[:3])
        typer.echo(f"| {lr:g} | {res.steps} | {res.step_losses[0]:.2f} -> {res.step_losses[-1]:.2f} | "
                   f"{np.mean([p.well_formed for p in parsed]):.2f} | {np.mean(exact):.2f} | "
                   f"{time.perf_counter() - t0:.0f} | {first} |")


if __name__ == "__main__":
    typer.run(main)
