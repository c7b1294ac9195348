"""Fine-tune from a prompts file: the entry point for `accelerate launch` on one or several GPUs.

    accelerate launch --num_processes 4 -m models.llm.launch --prompts W/llm/perplexity.parquet \\
        --model smollm2-135m --out W/models/llm_adapter

`--prompts` is what the `llm_perplexity` asset writes (text, response and perplexity per prompt); the perplexity
schedule orders the training. `fine_tune` splits each step's prompts across the processes, and the main process
saves the adapter. On one CPU process (`accelerate launch --num_processes 1 --cpu ...`) it is the same run as the
`llm_adapter` asset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from models.llm.model import add_lora, load_llm
from models.llm.prompt import Prompt
from models.llm.train import LLMTrainConfig, config_dict, fine_tune, save_adapter, schedule


def main(prompts: Annotated[Path, typer.Option(help="Parquet with text, response (and perplexity) columns")],
         out: Annotated[Path, typer.Option(help="Adapter folder")],
         model: Annotated[str, typer.Option(help="Base LLM")] = "smollm2-135m",
         lr: float = 2e-4, batch_size: int = 4, epochs: int = 1, high_epochs: int = 3,
         max_seconds: Annotated[float | None, typer.Option(help="Time budget, seconds")] = None,
         seed: int = 0) -> None:
    """Fine-tune LoRA on the prompts and save the adapter (main process)."""
    from accelerate import PartialState

    df = pd.read_parquet(prompts)
    items = [Prompt(t, r, 0, 0, 0) for t, r in zip(df["text"], df["response"], strict=True)]
    llm = add_lora(load_llm(model, corpus=list(df["text"])))
    cfg = LLMTrainConfig(lr=lr, batch_size=batch_size, epochs=epochs, high_epochs=high_epochs, max_seconds=max_seconds,
                         seed=seed)
    order = schedule(df["perplexity"].to_numpy(), cfg) if "perplexity" in df else None
    res = fine_tune(llm.model, llm.tokenizer, items, cfg, order)
    state = PartialState()
    if state.is_main_process:
        save_adapter(llm.model, out, {"base_model": llm.name, "train_config": config_dict(cfg), "steps": res.steps,
                                      "processes": state.num_processes, "seconds": res.seconds})
        typer.echo(f"{res.steps} steps on {state.num_processes} process(es); adapter in {out}")


if __name__ == "__main__":
    typer.run(main)
