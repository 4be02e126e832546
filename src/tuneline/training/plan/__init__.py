"""Memory plan: a training run's peak memory, estimated before any weights are loaded.

    tuneline plan CONFIG [--accelerator H100-80GB] [--answer-tokens N] [--json]

The model is built from its config.json on the meta device (no weights are read), and the method
(lora / dora / qlora / full) is applied there through the same ``prepare_for_training`` the train
stage uses, so the parameter counts are the real ones. Memory then comes from a component model:

  weights      base weights in model.dtype (qlora: nf4 linear layers, 0.5 byte + block constants)
  adapter      LoRA/DoRA parameters (fp32, as PEFT keeps them) and modules_to_save copies
  optimizer    AdamW's two moments per trainable parameter
  gradients    one per trainable parameter; present at the optimizer step, not during the forward
               (the Trainer frees them with zero_grad) unless gradients accumulate over micro-batches
  activations  tensors saved for the backward pass, per token per decoder layer
               (``_layer_elements``: counted with saved-tensor hooks on Llama layers), or only the
               layer inputs plus one recomputed layer under gradient checkpointing; the vision tower's
               likewise when it trains, else one layer's working set (it runs without a graph)
  logits       the LM head output and its cross-entropy copies at answer tokens (training/loss.py);
               without train.answer_only_logits also every position's logits, then their gradient
  overhead     the framework itself: the imported stack (CPU RSS) or the CUDA context (GPU)

The peak is the larger of two moments: the end of the forward pass (activations and logits alive)
and the optimizer step (gradients alive). Two constants are measured rather than counted: the
imported stack's RSS and the 13 bytes per logit element. ``benchmarks/bench_plan.py`` checks the
whole against the peak RSS of real training steps on CPU (fp32, ``MALLOC_MMAP_THRESHOLD_=65536``);
the GPU side (dtype, CUDA context) follows the same model but is not measured there.
"""

from __future__ import annotations

from tuneline.training.plan.advice import LIGHTER, Plan, make_plan, plan_json
from tuneline.training.plan.catalogue import (
    ACCELERATORS,
    CPU_OVERHEAD,
    DTYPE_BYTES,
    DYNAMIC_IMAGE_PATCHES,
    GPU_OVERHEAD,
    HEADROOM_TARGET,
    LOGITS_BYTES_EXTRA_16BIT,
    LOGITS_BYTES_FP32,
    MAX_BATCH,
    NF4_BYTES,
    Accelerator,
    Dtype,
    GiB,
    Method,
    MiB,
    PlanError,
    accelerator_names,
    count,
    get_accelerator,
    gib,
    human,
    machine_memory,
)
from tuneline.training.plan.estimate import MemoryEstimate, estimate, max_batch_size
from tuneline.training.plan.profile import (
    MethodParams,
    ModelProfile,
    TextShape,
    VisionShape,
    Workload,
    model_profile,
    workload_from_config,
)
from tuneline.training.plan.render import render

__all__ = [
    "ACCELERATORS",
    "Accelerator",
    "CPU_OVERHEAD",
    "DTYPE_BYTES",
    "DYNAMIC_IMAGE_PATCHES",
    "Dtype",
    "GPU_OVERHEAD",
    "GiB",
    "HEADROOM_TARGET",
    "LIGHTER",
    "LOGITS_BYTES_EXTRA_16BIT",
    "LOGITS_BYTES_FP32",
    "MAX_BATCH",
    "MemoryEstimate",
    "Method",
    "MethodParams",
    "MiB",
    "ModelProfile",
    "NF4_BYTES",
    "Plan",
    "PlanError",
    "TextShape",
    "VisionShape",
    "Workload",
    "accelerator_names",
    "count",
    "estimate",
    "get_accelerator",
    "gib",
    "human",
    "machine_memory",
    "make_plan",
    "max_batch_size",
    "model_profile",
    "plan_json",
    "render",
    "workload_from_config",
]
