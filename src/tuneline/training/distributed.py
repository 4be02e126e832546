"""Distributed training on torchrun (torch.distributed.run): never a home-made launcher.

``tuneline train CONFIG --nproc-per-node N`` resolves the run directory once, then runs the same
train stage in N worker processes under torchrun; the Trainer (through accelerate) does DDP, gloo on
CPU and NCCL on GPUs. Inside the workers only rank 0 writes run-directory state.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path


def in_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def torchrun_command(
    config: Path,
    run_dir: Path,
    overrides: list[str],
    *,
    nproc_per_node: int,
    nnodes: int = 1,
    node_rank: int = 0,
    master_addr: str = "127.0.0.1",
    master_port: int = 29500,
    max_restarts: int = 0,
) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc-per-node={nproc_per_node}",
        f"--nnodes={nnodes}",
        f"--max-restarts={max_restarts}",
    ]
    if nnodes > 1:
        cmd += [
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={master_addr}:{master_port}",
            f"--node-rank={node_rank}",
        ]
    else:
        cmd += [f"--master-addr={master_addr}", f"--master-port={master_port}"]
    cmd += ["-m", "tuneline.cli", "train", str(config), "--run-dir", str(run_dir)]
    for item in overrides:
        cmd += ["--set", item]
    return cmd


def launch(cmd: list[str]) -> int:
    """Run torchrun; forward SIGTERM / SIGINT to it. Returns 75 when stopped by a signal (retryable)."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    proc = subprocess.Popen(cmd, env=env)
    received: list[int] = []

    def forward(signum, frame):
        received.append(signum)
        proc.send_signal(signal.SIGTERM)  # torchrun passes it on to every worker, which checkpoints

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        code = proc.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 75 if received else code


def strategy_arguments(dist_cfg, *, cuda: bool) -> dict:
    """TrainingArguments for train.distributed.strategy: the Trainer hands them to accelerate.

    ddp needs nothing (accelerate wraps the model in DistributedDataParallel under torchrun). fsdp is
    PyTorch FSDP2 with transformer-layer auto-wrapping (the wrap policy falls back to the model's
    ``_no_split_modules``) and a full, HF-loadable state dict in checkpoints. deepspeed is ZeRO with
    the Trainer's "auto" values so batch size, clipping and precision come from train.*.
    """
    from tuneline.errors import ConfigError

    if dist_cfg.strategy != "ddp" and not cuda:
        # accelerate only builds FSDP / DeepSpeed engines on accelerators; on CPU it would silently run DDP.
        raise ConfigError(
            [
                f"train.distributed.strategy: {dist_cfg.strategy!r} needs GPUs (accelerate runs FSDP and "
                "DeepSpeed on accelerators only) and none is visible; use strategy: ddp on CPU"
            ]
        )
    if dist_cfg.strategy == "fsdp":
        options = [dist_cfg.fsdp_sharding, "auto_wrap"] + (["offload"] if dist_cfg.fsdp_cpu_offload else [])
        return {
            "fsdp": " ".join(options),
            "fsdp_config": {"version": 2, "state_dict_type": "FULL_STATE_DICT"},
        }
    if dist_cfg.strategy == "deepspeed":
        import importlib.util

        if importlib.util.find_spec("deepspeed") is None:
            raise ConfigError(
                [
                    "train.distributed.strategy: 'deepspeed' but the deepspeed package is not installed; "
                    "pip install deepspeed (GPU machines), or use strategy: fsdp or ddp"
                ]
            )
        zero: dict = {"stage": dist_cfg.deepspeed_stage}
        if dist_cfg.deepspeed_offload:
            zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
        return {
            "deepspeed": {
                "zero_optimization": zero,
                "train_micro_batch_size_per_gpu": "auto",
                "train_batch_size": "auto",
                "gradient_accumulation_steps": "auto",
                "gradient_clipping": "auto",
                "bf16": {"enabled": "auto"},
            }
        }
    return {}
