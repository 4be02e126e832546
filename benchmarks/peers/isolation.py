"""Does a packed row keep its samples apart, given what each framework's packed batches carry?

    for e in trl axolotl llamafactory; do benchmarks/peers/.envs/$e/bin/python benchmarks/peers/isolation.py \
        benchmarks/peers/.work/assets/llama; done; .venv/bin/python benchmarks/peers/isolation.py ...

Runs the tiny Llama (SDPA, CPU) in one environment on two random samples packed in one row and compares
the second sample's logits with those of the sample alone, for the two shapes of packed batch the probe
sees: restarting ``position_ids`` with no attention mask (TRL's padding-free rows, Axolotl's multipack,
tuneline) and restarting ``position_ids`` with an all-ones 2-d mask (LLaMA-Factory's ``packing``
without ``neat_packing``). Prints the environment's transformers version and both verdicts.
"""

from __future__ import annotations

import sys

import torch
import transformers
from transformers import AutoModelForCausalLM


def main() -> None:
    model = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype="float32", attn_implementation="sdpa")
    model.eval()
    g = torch.Generator().manual_seed(0)
    first, second = torch.randint(3, 500, (1, 20), generator=g), torch.randint(3, 500, (1, 15), generator=g)
    ids = torch.cat([first, second], 1)
    pos = torch.cat([torch.arange(20), torch.arange(15)])[None]
    with torch.no_grad():
        alone = model(input_ids=second, use_cache=False).logits[0]
        no_mask = model(input_ids=ids, position_ids=pos, use_cache=False).logits[0, 20:]
        ones = model(input_ids=ids, position_ids=pos, attention_mask=torch.ones_like(ids), use_cache=False)
    print(
        f"transformers {transformers.__version__}: position ids, no mask: "
        f"{'isolated' if torch.allclose(alone, no_mask, atol=1e-4) else 'NOT isolated'}; "
        f"position ids + all-ones mask: "
        f"{'isolated' if torch.allclose(alone, ones.logits[0, 20:], atol=1e-4) else 'NOT isolated'}"
    )


if __name__ == "__main__":
    main()
