"""One training run of one framework, in that framework's own virtual environment, under the probe.

    <env>/bin/python benchmarks/peers/workers.py SPEC.json

SPEC names the framework, the task (``text``, ``pack``, ``image``), the shared assets and the settings
(LoRA r/alpha, batch, length, learning rate, steps); benchmarks/peers/run_peers.py writes it. Every
framework is driven through its documented entry point as a new user would (TRL's SFTTrainer, Axolotl's
``axolotl.cli.train``, LLaMA-Factory's ``run_exp``, tuneline's training stage), with the same settings:
no evaluation, no checkpoint saving, no gradient checkpointing, fp32 on CPU, one data-loader process.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from probe import Probe  # noqa: E402

VISION_EXCLUDE = r".*(vision_tower|multi_modal_projector).*"


def run_trl(spec: dict) -> None:
    import transformers
    from datasets import Image, Sequence, load_dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    image = spec["task"] == "image"
    dataset = load_dataset("json", data_files=spec["data"], split="train")
    if image:
        dataset = dataset.cast_column("images", Sequence(Image()))
    auto = transformers.AutoModelForImageTextToText if image else transformers.AutoModelForCausalLM
    model = auto.from_pretrained(spec["model_dir"], dtype="float32")
    processor = (transformers.AutoProcessor if image else transformers.AutoTokenizer).from_pretrained(
        spec["model_dir"]
    )
    args = SFTConfig(
        output_dir=spec["out_dir"],
        per_device_train_batch_size=spec["batch_size"],
        learning_rate=spec["lr"],
        max_steps=spec["steps"],
        logging_steps=10,
        save_strategy="no",
        report_to="none",
        bf16=False,
        gradient_checkpointing=False,
        seed=0,
        dataloader_num_workers=0,
        disable_tqdm=True,
        use_cpu=True,
        max_length=spec["max_length"],
        packing=spec["task"] == "pack",  # TRL's default strategy: bfd, padding-free rows
        completion_only_loss=True,
    )
    lora = LoraConfig(
        r=spec["lora_r"],
        lora_alpha=spec["lora_alpha"],
        lora_dropout=0.0,
        target_modules="all-linear",
        exclude_modules=VISION_EXCLUDE if image else None,
        task_type="CAUSAL_LM",
    )
    SFTTrainer(
        model=model, args=args, train_dataset=dataset, processing_class=processor, peft_config=lora
    ).train()


def run_axolotl(spec: dict) -> None:
    import yaml

    image = spec["task"] == "image"
    cfg = {
        "base_model": spec["model_dir"],
        "chat_template": "tokenizer_default",
        "datasets": [
            {
                "path": spec["data"],
                "ds_type": "json",
                "type": "chat_template",
                "field_messages": "messages",
                "roles_to_train": ["assistant"],
            }
        ],
        "dataset_prepared_path": str(Path(spec["out_dir"]) / "prepared"),
        "val_set_size": 0,
        "output_dir": spec["out_dir"],
        "adapter": "lora",
        "lora_r": spec["lora_r"],
        "lora_alpha": spec["lora_alpha"],
        "lora_dropout": 0.0,
        "lora_target_linear": True,
        # Axolotl's fused LoRA kernels are Triton (CUDA only); on CPU they fail at the first step.
        "lora_mlp_kernel": False,
        "lora_qkv_kernel": False,
        "lora_o_kernel": False,
        "sequence_len": spec["max_length"],
        "sample_packing": spec["task"] == "pack",
        "pad_to_sequence_len": False,
        "micro_batch_size": spec["batch_size"],
        "gradient_accumulation_steps": 1,
        "max_steps": spec["steps"],
        "num_epochs": 1000,
        "learning_rate": spec["lr"],
        "optimizer": "adamw_torch",
        "lr_scheduler": "linear",
        "warmup_steps": 0,
        "bf16": False,
        "fp16": False,
        "tf32": False,
        "attn_implementation": "sdpa",
        "gradient_checkpointing": False,
        "logging_steps": 10,
        "save_strategy": "no",
        "seed": 0,
        "dataloader_num_workers": 0,
        "dataset_num_proc": 1,
        "use_tensorboard": False,
        "special_tokens": {},
    }
    if image:
        cfg.update(
            processor_type="AutoProcessor",
            skip_prepare_dataset=True,
            remove_unused_columns=False,
            lora_target_linear=None,
            lora_target_modules=r"model.language_model.layers.[\d]+.(mlp|self_attn).(up|down|gate|q|k|v|o)_proj",
        )
    path = Path(spec["out_dir"]) / "axolotl.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg))
    sys.argv = ["axolotl"]
    from axolotl.cli.train import do_cli

    do_cli(config=str(path))


def run_llamafactory(spec: dict) -> None:
    from llamafactory.train.tuner import run_exp

    image = spec["task"] == "image"
    args = {
        "model_name_or_path": spec["model_dir"],
        "trust_remote_code": False,
        "stage": "sft",
        "do_train": True,
        "finetuning_type": "lora",
        "lora_rank": spec["lora_r"],
        "lora_alpha": spec["lora_alpha"],
        "lora_dropout": 0.0,
        "lora_target": "all",
        "dataset": spec["dataset_name"],
        "dataset_dir": spec["dataset_dir"],
        "template": "gemma3" if image else "llama3",
        "cutoff_len": spec["max_length"],
        "packing": spec["task"] == "pack",  # LLaMA-Factory's default packing (neat_packing: false)
        "overwrite_cache": True,
        "preprocessing_num_workers": 1,
        "dataloader_num_workers": 0,
        "output_dir": spec["out_dir"],
        "overwrite_output_dir": True,
        "per_device_train_batch_size": spec["batch_size"],
        "gradient_accumulation_steps": 1,
        "learning_rate": spec["lr"],
        "max_steps": spec["steps"],
        "lr_scheduler_type": "linear",
        "warmup_steps": 0,
        "logging_steps": 10,
        "save_strategy": "no",
        "report_to": "none",
        "bf16": False,
        "seed": 0,
        "disable_tqdm": True,
        "plot_loss": False,
        "use_cpu": True,
        "flash_attn": "sdpa",
    }
    if image:
        args.update(freeze_vision_tower=True, freeze_multi_modal_projector=True, image_max_pixels=1024 * 1024)
    run_exp(args)


def run_tuneline(spec: dict) -> None:
    from tuneline.config import load_config
    from tuneline.runs import RunDir
    from tuneline.stages.pipeline import run_stage

    cfg = load_config(spec["config"], spec.get("tuneline_set") or [])
    run_stage("train", cfg, RunDir.open(Path(spec["run_dir"])))


RUNNERS = {"trl": run_trl, "axolotl": run_axolotl, "llamafactory": run_llamafactory, "tuneline": run_tuneline}


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    probe = Probe(spec["result"], spec["warmup"], spec["steps"])
    probe.install()
    RUNNERS[spec["framework"]](spec)
    probe.write(spec["framework"], spec["task"])


if __name__ == "__main__":
    main()
