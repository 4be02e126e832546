"""The estimate: a run's peak memory by component at the two peak moments, and the batch search."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from tuneline.training.plan.catalogue import (
    CPU_OVERHEAD,
    DTYPE_BYTES,
    GPU_OVERHEAD,
    LOGITS_BYTES_EXTRA_16BIT,
    LOGITS_BYTES_FP32,
    MAX_BATCH,
    NF4_BYTES,
    Accelerator,
    Method,
)
from tuneline.training.plan.profile import ModelProfile, TextShape, Workload


# ------------------------------------------------------------------------- the estimate
@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes by component. Gradients and activations are never all alive at once: see the two phases."""

    weights: int
    adapter: int
    optimizer: int
    gradients: int  # all of them, at the optimizer step
    gradients_in_forward: int  # alive at the end of the forward pass (accumulation, LM head under full)
    activations: int  # language model, as configured (checkpointing on or off)
    vision_activations: int
    logits: int
    overhead: int

    @property
    def forward_peak(self) -> int:
        """End of the forward pass / start of the backward pass."""
        return (
            self.overhead
            + self.weights
            + self.adapter
            + self.optimizer
            + self.gradients_in_forward
            + self.activations
            + self.vision_activations
            + self.logits
        )

    @property
    def step_peak(self) -> int:
        """The optimizer step: every gradient alive, activations freed."""
        return self.overhead + self.weights + self.adapter + self.optimizer + self.gradients

    @property
    def peak(self) -> int:
        return max(self.forward_peak, self.step_peak)

    @property
    def peak_phase(self) -> Literal["forward pass", "optimizer step"]:
        return "forward pass" if self.forward_peak >= self.step_peak else "optimizer step"


def _layer_elements(text: TextShape, method: Method, lora_r: int) -> int:
    """Elements one decoder layer saves for the backward pass, per token.

    Counted with saved-tensor hooks on Llama layers (sdpa): full fine-tuning saves 6h + 2q + 2kv + 4i
    (norm inputs and outputs, q/k/v and attention output, the MLP's gate, up, activation and product);
    with frozen base weights the norms' outputs are not saved for weight gradients (-2h) but every
    adapter keeps its rank-r intermediate. Extra norms (Gemma's four per layer) save two tensors each.
    """
    h = text.hidden
    base = 2 * text.q_dim + 2 * text.kv_dim + 4 * text.intermediate + 2 * (text.norms_per_layer - 2) * h
    if method == "full":
        return base + 6 * h
    return base + 4 * h + lora_r * text.lora_targets_per_layer


def estimate(profile: ModelProfile, work: Workload, accelerator: Accelerator) -> MemoryEstimate:
    text = profile.text
    method = profile.method(work.method)
    peft = work.method != "full"
    wbytes = DTYPE_BYTES[work.dtype]
    # Activations follow the compute dtype: the model's, or bf16 under autocast.
    abytes = 2 if work.mixed_bf16 else wbytes
    # PEFT keeps adapters in fp32 (autocast_adapter_dtype); full fine-tuning trains the weights' dtype.
    tbytes = 4 if peft else wbytes

    if work.method == "qlora":
        # 4-bit linear weights; prepare_model_for_kbit_training upcasts every other weight to fp32.
        weights = (
            int(profile.quantizable_params * NF4_BYTES) + (profile.params - profile.quantizable_params) * 4
        )
    else:
        weights = profile.params * wbytes
    adapter = method.added * 4 if peft else 0
    optimizer = 2 * method.trainable * tbytes
    gradients = method.trainable * tbytes
    if work.gradient_accumulation_steps > 1:
        grads_forward = gradients  # kept across micro-batches
    elif not peft:
        grads_forward = text.vocab * text.hidden * tbytes  # the LM head's, first in the backward pass
    else:
        grads_forward = 0

    tokens = work.batch_size * work.seq_len
    per_layer = _layer_elements(text, work.method, work.lora_r)
    if work.gradient_checkpointing:
        # Each layer keeps only its input; the backward pass recomputes one layer at a time.
        layer_elements = text.layers * text.hidden + per_layer
    else:
        layer_elements = text.layers * per_layer
    activations = tokens * (layer_elements + 3 * text.hidden) * abytes  # + embeddings and final norm
    if work.method == "qlora":
        activations += profile.largest_linear * abytes  # a dequantized weight, one layer at a time
    if work.method == "dora":
        activations += 2 * profile.largest_linear * 4  # W + BA and its norm, one layer at a time
    if work.mixed_bf16 and not peft:
        activations += method.trainable * 2  # autocast's bf16 copies of trainable weights

    vision_activations = 0
    if profile.vision is not None and work.images_per_sample:
        v = profile.vision
        patches = work.batch_size * work.images_per_sample * v.patches_per_image
        if work.train_vision_tower:
            per = v.hidden if work.gradient_checkpointing else 10 * v.hidden + 4 * v.intermediate
            vision_activations = patches * v.layers * per * abytes
        else:  # frozen: no graph, one layer's working set at a time
            vision_activations = patches * (4 * v.hidden + 2 * v.intermediate) * abytes

    # The loss runs over answer tokens either way; without answer-only logits the LM head first
    # produces every position's logits (and the backward pass their gradient, one at a time).
    kept = work.batch_size * work.answer_tokens
    per_logit = LOGITS_BYTES_FP32 + (LOGITS_BYTES_EXTRA_16BIT if wbytes == 2 else 0)
    full = 0 if work.answer_only_logits else work.batch_size * work.seq_len * text.vocab
    if text.logit_softcapping:
        per_logit += 2 * wbytes  # divide, tanh, multiply: two more copies
        full *= 3
    logits = kept * text.vocab * per_logit + full * wbytes

    return MemoryEstimate(
        weights=weights,
        adapter=adapter,
        optimizer=optimizer,
        gradients=gradients,
        gradients_in_forward=grads_forward,
        activations=activations,
        vision_activations=vision_activations,
        logits=logits,
        overhead=CPU_OVERHEAD if accelerator.kind == "cpu" else GPU_OVERHEAD,
    )


def max_batch_size(
    profile: ModelProfile, work: Workload, accelerator: Accelerator, limit: int = MAX_BATCH
) -> int:
    """The largest micro-batch whose peak fits the accelerator's memory (0: not even one sample)."""

    def fits(b: int) -> bool:
        return estimate(profile, replace(work, batch_size=b), accelerator).peak <= accelerator.memory_bytes

    if not fits(1):
        return 0
    lo, hi = 1, 2
    while hi <= limit and fits(hi):
        lo, hi = hi, hi * 2
    hi = min(hi, limit + 1)
    while hi - lo > 1:  # fits(lo), not fits(hi)
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo
