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

import difflib
import math
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tuneline.errors import ModelError, TunelineError

if TYPE_CHECKING:
    from tuneline.config.schema import Config, ModelConfig, TrainConfig
    from tuneline.models.families import ModelFamily

Method = Literal["lora", "dora", "qlora", "full"]
Dtype = Literal["float32", "bfloat16", "float16"]

GiB = 1024**3
MiB = 1024**2
# RSS of a process that has imported torch, transformers, peft and the Trainer (measured on the pinned
# stack: 0.51 GiB). What a CPU run holds before it allocates its first weight.
CPU_OVERHEAD = int(0.52 * GiB)
# CUDA context, kernel images and cuBLAS workspace: device memory PyTorch does not count as allocated.
GPU_OVERHEAD = int(0.8 * GiB)
# nf4: 4-bit codes plus one fp32 absmax per 64-weight block (no double quantization).
NF4_BYTES = 0.5 + 4 / 64
# Logits and cross-entropy per (kept token x vocabulary) element: the logits, log-softmax (saved),
# its gradient and the logits' gradient, ~13 bytes in fp32 (calibrated); a 16-bit model adds its
# own-dtype logits and gradient before the fp32 upcast.
LOGITS_BYTES_FP32 = 13
LOGITS_BYTES_EXTRA_16BIT = 4
# Images whose size the config does not fix (Qwen-VL dynamic resolution): a 448x448 image, patch 14.
DYNAMIC_IMAGE_PATCHES = 1024
MAX_BATCH = 4096  # the batch search stops here: "4096 or more"
HEADROOM_TARGET = 0.10  # below this, allocator fragmentation can tip a run over
DTYPE_BYTES: dict[str, int] = {"float32": 4, "bfloat16": 2, "float16": 2}


class PlanError(TunelineError):
    """A plan that cannot be made as asked (an unknown accelerator, an impossible option)."""

    exit_code = 2


# ------------------------------------------------------------------------- accelerators
@dataclass(frozen=True)
class Accelerator:
    name: str
    memory_bytes: int  # total memory as the driver reports it (cpu: this machine's RAM)
    kind: Literal["gpu", "cpu"]
    bf16: bool = True
    aliases: tuple[str, ...] = ()


ACCELERATORS: tuple[Accelerator, ...] = (
    Accelerator("H100-80GB", 81559 * MiB, "gpu", aliases=("H100",)),
    Accelerator("H200-141GB", 143771 * MiB, "gpu", aliases=("H200",)),
    Accelerator("A100-40GB", 40960 * MiB, "gpu"),
    Accelerator("A100-80GB", 81920 * MiB, "gpu"),
    Accelerator("L4-24GB", 23034 * MiB, "gpu", aliases=("L4",)),
    Accelerator("A10G-24GB", 23028 * MiB, "gpu", aliases=("A10G", "A10")),
    Accelerator("T4-16GB", 15360 * MiB, "gpu", bf16=False, aliases=("T4",)),
    Accelerator("V100-16GB", 16384 * MiB, "gpu", bf16=False),
    Accelerator("V100-32GB", 32768 * MiB, "gpu", bf16=False),
)


def _norm(name: str) -> str:
    return re.sub(r"[^A-Z0-9]", "", name.upper().replace("NVIDIA", ""))


def machine_memory() -> int:
    """This machine's RAM in bytes."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def accelerator_names() -> list[str]:
    return [a.name for a in ACCELERATORS] + ["cpu"]


def get_accelerator(name: str) -> Accelerator:
    """An accelerator by name (case, dashes and an 'NVIDIA' prefix do not matter); cpu = this machine."""
    key = _norm(name)
    if key == "CPU":
        return Accelerator("cpu", machine_memory(), "cpu")
    for acc in ACCELERATORS:
        if key in {_norm(acc.name), *map(_norm, acc.aliases)}:
            return acc
    prefixed = [a.name for a in ACCELERATORS if key and _norm(a.name).startswith(key)]
    if len(prefixed) > 1:
        hint = f"{name!r} is ambiguous: say {' or '.join(prefixed)}"
    else:
        lookup = {_norm(n): n for n in accelerator_names()}
        close = difflib.get_close_matches(key, lookup, n=1, cutoff=0.5)
        hint = f"did you mean {lookup[close[0]]!r}? " if close else ""
        hint += f"known accelerators: {', '.join(accelerator_names())}"
    raise PlanError(f"unknown accelerator {name!r}", hint=hint)


# ------------------------------------------------------------------------- the model, from its config
@dataclass(frozen=True)
class TextShape:
    layers: int
    hidden: int
    intermediate: int
    q_dim: int  # attention heads x head_dim
    kv_dim: int  # key/value heads x head_dim
    vocab: int
    norms_per_layer: int  # hidden-wide norms in one decoder layer (Llama 2, Gemma 3 4)
    lora_targets_per_layer: int  # adapted linear layers in one decoder layer (PEFT methods)
    logit_softcapping: bool


@dataclass(frozen=True)
class VisionShape:
    layers: int
    hidden: int
    intermediate: int
    patches_per_image: int  # tokens inside the vision tower for one image
    image_tokens: int  # tokens one image takes in the language model's sequence (counted in max_seq_length)


@dataclass(frozen=True)
class MethodParams:
    """What a method trains: trainable parameters and parameters it adds to the base (PEFT)."""

    trainable: int
    added: int


@dataclass(frozen=True)
class ModelProfile:
    spec: str
    family: str
    model_type: str
    params: int  # base model parameters (unique; tied weights once)
    vision_params: int  # vision tower + projector
    quantizable_params: int  # linear weights qlora stores in nf4
    largest_linear: int  # elements of the largest language-model linear weight
    text: TextShape
    vision: VisionShape | None
    lora: MethodParams
    dora: MethodParams
    full: MethodParams

    def method(self, name: Method) -> MethodParams:
        return self.full if name == "full" else self.dora if name == "dora" else self.lora


def _config_folder(model: ModelConfig) -> Path:
    """A folder holding the base model's config.json, without reading (or downloading) any weights."""
    from tuneline.models.load import PACKAGE_PREFIX, TINY_PREFIX, package_folder, parse_tiny, tiny_folder

    spec = model.base
    if spec.startswith(TINY_PREFIX):
        return tiny_folder(*parse_tiny(spec))
    if spec.startswith(PACKAGE_PREFIX):
        return package_folder(spec)[0]
    local = Path(spec).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise ModelError(
                f"{local} has no config.json, so it is not a transformers checkpoint",
                hint="point model.base at a folder written by save_pretrained, a hub id, or tiny:<family>",
            )
        return local
    if spec.count("/") != 1 or spec.startswith((".", "/", "~")):
        raise ModelError(
            f"model.base {spec!r} is neither an existing folder, a hub id (org/name) nor tiny:<family>",
            hint="check the path (relative paths are resolved against the config file)",
        )
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(
            hf_hub_download(spec, "config.json", revision=model.revision, local_files_only=True)
        ).parent
    except LocalEntryNotFoundError:
        if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}:
            raise ModelError(
                f"model {spec!r} is not in the local hub cache and HF_HUB_OFFLINE is set, "
                "so its config.json cannot be read",
                hint=f"fetch only its config (huggingface-cli download {spec} config.json) where the hub is "
                "reachable, or point model.base at a local folder holding config.json",
            ) from None
    try:
        return Path(hf_hub_download(spec, "config.json", revision=model.revision)).parent
    except Exception as exc:  # noqa: BLE001 - hub errors come in many types
        raise ModelError(f"could not read the config of {spec!r} from the hub: {exc}") from exc


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _first_layer(model: Any, skip: tuple[str, ...]) -> tuple[str, Any]:
    for name, module in model.named_modules():
        if re.search(r"(^|\.)layers\.0$", name) and not any(f"{p}." in name + "." for p in skip):
            return name, module
    raise ModelError(f"no decoder layer 'layers.0' found in {type(model).__name__}")


def _method_params(
    config: Any, family: ModelFamily, train: TrainConfig, method: Method
) -> tuple[MethodParams, int]:
    """Apply the method on a meta-device model; (its counts, adapted linears in one decoder layer)."""
    import torch
    import transformers

    from tuneline.training.adapters import prepare_for_training

    with torch.device("meta"):
        model = getattr(transformers, family.auto_class).from_config(config)
        before = sum(p.numel() for p in model.parameters())
        # qlora trains the same adapters as lora: count them on an unquantized meta model.
        model = prepare_for_training(
            model, _with_method(train, "lora" if method == "qlora" else method), family
        )
    after = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    vision = tuple(family.vision_modules)
    targets = sum(
        1
        for name, _ in model.named_modules()
        if ".layers.0." in name and name.endswith(".lora_A") and not any(v in name for v in vision)
    )
    return MethodParams(trainable=trainable, added=after - before), targets


def _with_method(train: TrainConfig, method: Method) -> TrainConfig:
    return train.model_copy(update={"method": method})


def _vision_shape(config: Any) -> VisionShape | None:
    vc = getattr(config, "vision_config", None)
    if vc is None:
        return None
    layers = getattr(vc, "num_hidden_layers", None) or getattr(vc, "depth", None) or 0
    hidden = getattr(vc, "embed_dim", None) or vc.hidden_size
    intermediate = getattr(vc, "intermediate_size", None) or int(getattr(vc, "mlp_ratio", 4) * hidden)
    image_size, patch = getattr(vc, "image_size", None), getattr(vc, "patch_size", 14)
    patches = (image_size // patch) ** 2 if image_size else DYNAMIC_IMAGE_PATCHES
    merge = getattr(vc, "spatial_merge_size", None) or getattr(config, "spatial_merge_size", None)
    shuffle = getattr(vc, "pixel_shuffle_ratio", None)
    if getattr(config, "mm_tokens_per_image", None):  # gemma3: pooled to a fixed count
        image_tokens = config.mm_tokens_per_image
    elif merge:  # qwen-vl, mistral3: merged patch squares
        image_tokens = patches // merge**2
    elif shuffle:  # llama4: pixel shuffle
        image_tokens = int(patches * shuffle**2)
    elif config.model_type == "mllama":  # cross-attention: one <|image|> token
        image_tokens = 1
    else:  # llava: a token per patch
        image_tokens = patches
    return VisionShape(layers, hidden, intermediate, patches, image_tokens)


def model_profile(model: ModelConfig, train: TrainConfig) -> ModelProfile:
    """Shapes and parameter counts of the base model and of every method, from config.json alone."""
    import torch
    import transformers

    from tuneline.models.families import family_for_model_type, get_family

    folder = _config_folder(model)
    try:
        config = transformers.AutoConfig.from_pretrained(folder)
    except (OSError, ValueError) as exc:
        raise ModelError(f"could not read the model config in {folder}: {exc}") from exc
    family = get_family(model.family) if model.family else family_for_model_type(config.model_type)
    if family.is_classifier:  # the calibration is for decoder LMs (vocabulary logits, decoder layers)
        raise ModelError(
            f"tuneline plan models causal language models; {model.base} is a {family.name} sequence "
            "classifier, which its memory model does not cover",
            hint="encoders of this size fit easily; measure with a short run (train.max_steps) instead",
        )
    vision_prefixes = tuple(family.vision_modules) + tuple(family.projector_modules)

    # The meta device (not accelerate's init_empty_weights, which unties tied embeddings): shapes only.
    with torch.device("meta"):
        meta = getattr(transformers, family.auto_class).from_config(config)
    params = sum(p.numel() for p in meta.parameters())
    vision_params = sum(p.numel() for n, p in meta.named_parameters() if _under(n, vision_prefixes))
    linears = [(name, m.weight.numel()) for name, m in meta.named_modules() if isinstance(m, torch.nn.Linear)]
    quantizable = sum(
        n for name, n in linears if not any(name.startswith(s) for s in family.quant_skip_modules)
    )
    lm_linears = [n for name, n in linears if not _under(name, vision_prefixes) and "lm_head" not in name]
    _, layer0 = _first_layer(meta, vision_prefixes)
    tc = config.get_text_config()
    hidden = tc.hidden_size
    norms = sum(
        1
        for m in layer0.modules()
        if type(m).__name__.lower().endswith("norm")
        and getattr(m, "weight", None) is not None
        and m.weight.numel() == hidden
    )
    heads = tc.num_attention_heads
    head_dim = getattr(tc, "head_dim", None) or hidden // heads
    kv_heads = getattr(tc, "num_key_value_heads", None) or heads
    lora, targets = _method_params(config, family, train, "lora")
    dora, _ = _method_params(config, family, train, "dora")
    full, _ = _method_params(config, family, train, "full")
    text = TextShape(
        layers=tc.num_hidden_layers,
        hidden=hidden,
        intermediate=tc.intermediate_size,
        q_dim=heads * head_dim,
        kv_dim=kv_heads * head_dim,
        vocab=tc.vocab_size,
        norms_per_layer=max(norms, 2),
        lora_targets_per_layer=targets,
        logit_softcapping=bool(getattr(tc, "final_logit_softcapping", None)),
    )
    return ModelProfile(
        spec=model.base,
        family=family.name,
        model_type=config.model_type,
        params=params,
        vision_params=vision_params,
        quantizable_params=quantizable,
        largest_linear=max(lm_linears, default=0),
        text=text,
        vision=_vision_shape(config) if family.multimodal else None,
        lora=lora,
        dora=dora,
        full=full,
    )


# ------------------------------------------------------------------------- the run
@dataclass(frozen=True)
class Workload:
    method: Method
    dtype: Dtype
    batch_size: int
    seq_len: int  # data.max_seq_length: the longest sample, image tokens included
    answer_tokens: int  # label tokens per sample (the logits term under answer_only_logits)
    images_per_sample: int
    gradient_checkpointing: bool
    answer_only_logits: bool
    gradient_accumulation_steps: int
    mixed_bf16: bool  # train.bf16: autocast over fp32 weights
    train_vision_tower: bool
    lora_r: int
    image_cache_bytes: int = 0  # the frozen vision side's feature cache may grow to this (host memory)
    distributed_strategy: str = "ddp"  # fsdp / deepspeed shard state across processes: not modelled


def workload_from_config(
    cfg: Config,
    accelerator: Accelerator,
    *,
    answer_tokens: int | None = None,
    images_per_sample: int | None = None,
    multimodal: bool = True,
) -> Workload:
    seq = cfg.data.max_seq_length
    if answer_tokens is not None and not 0 < answer_tokens <= seq:
        raise PlanError(
            f"answer tokens {answer_tokens} must be between 1 and data.max_seq_length ({seq})",
            hint="pass --answer-tokens with the typical length of an answer in tokens",
        )
    if images_per_sample is not None and images_per_sample < 0:
        raise PlanError(f"images per sample {images_per_sample} must be 0 or more")
    dtype = cfg.model.dtype
    if dtype == "auto":
        dtype = "bfloat16" if accelerator.kind == "gpu" and accelerator.bf16 else "float32"
    return Workload(
        method=cfg.train.method,
        dtype=dtype,
        batch_size=cfg.train.batch_size,
        seq_len=seq,
        answer_tokens=answer_tokens or max(1, seq // 4),
        images_per_sample=(1 if multimodal else 0) if images_per_sample is None else images_per_sample,
        gradient_checkpointing=cfg.train.gradient_checkpointing,
        answer_only_logits=cfg.train.answer_only_logits,
        gradient_accumulation_steps=cfg.train.gradient_accumulation_steps,
        mixed_bf16=cfg.train.bf16,
        train_vision_tower=cfg.train.train_vision_tower,
        lora_r=cfg.train.lora.r,
        image_cache_bytes=int(cfg.train.image_cache_gb * 1e9)
        if multimodal
        and cfg.train.cache_image_features
        and not (cfg.train.train_vision_tower or cfg.train.train_projector)
        else 0,
        distributed_strategy=cfg.train.distributed.strategy,
    )


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


# ------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class Plan:
    profile: ModelProfile
    workload: Workload
    accelerator: Accelerator
    estimate: MemoryEstimate  # as configured
    without_checkpointing: MemoryEstimate
    with_checkpointing: MemoryEstimate
    max_batch_without_checkpointing: int  # largest micro-batch that fits (0: none; MAX_BATCH: that or more)
    max_batch_with_checkpointing: int
    recommendations: tuple[str, ...]

    @property
    def max_batch(self) -> int:
        """The largest micro-batch that fits, as configured (checkpointing on or off)."""
        if self.workload.gradient_checkpointing:
            return self.max_batch_with_checkpointing
        return self.max_batch_without_checkpointing

    @property
    def fits(self) -> bool:
        return self.estimate.peak <= self.accelerator.memory_bytes

    @property
    def headroom(self) -> float:
        """Fraction of the accelerator's memory left at the peak (negative: over by that much)."""
        return 1 - self.estimate.peak / self.accelerator.memory_bytes


def gib(n: float) -> str:
    return f"{n / GiB:.2f} GiB"


def human(n: float) -> str:
    """Bytes for people: GiB from 1 GiB, MiB below, '-' for nothing."""
    if not n:
        return "-"
    return gib(n) if n >= GiB else f"{n / MiB:.1f} MiB"


def count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


LIGHTER: dict[str, tuple[Method, ...]] = {"full": ("lora", "qlora"), "lora": ("qlora",), "dora": ("qlora",)}


def _fixes(work: Workload, acc: Accelerator) -> list[tuple[str, Workload]]:
    """Changes that lower the peak, cheapest first, each including the ones before it where it helps."""
    base, words = work, []
    if acc.kind == "gpu" and acc.bf16 and work.dtype == "float32" and not work.mixed_bf16:
        base, words = replace(base, dtype="bfloat16"), ["set model.dtype=bfloat16"]
    if not work.answer_only_logits:
        base, words = replace(base, answer_only_logits=True), [*words, "enable train.answer_only_logits"]
    ckpt = "enable train.gradient_checkpointing"
    fixes = [(" and ".join(words), base)] if words else []
    if not work.gradient_checkpointing:
        fixes.append((" and ".join([*words, ckpt]), replace(base, gradient_checkpointing=True)))
    for method in LIGHTER.get(work.method, ()):
        use = f"use train.method={method}"
        fixes.append((" and ".join([use, *words]), replace(base, method=method)))
        if not work.gradient_checkpointing:
            fixes.append(
                (" and ".join([use, *words, ckpt]), replace(base, method=method, gradient_checkpointing=True))
            )
    return fixes


def _recommend(
    profile: ModelProfile, work: Workload, acc: Accelerator, est: MemoryEstimate
) -> tuple[str, ...]:
    cap = acc.memory_bytes
    b = work.batch_size
    notes: list[str] = []

    def accumulate(n: int) -> str:
        steps = math.ceil(b * work.gradient_accumulation_steps / n)
        return f"train.batch_size={n} with gradient_accumulation_steps={steps} keeps the effective batch"

    if est.peak <= cap:
        headroom = 1 - est.peak / cap
        notes.append(f"batch {b} fits on {acc.name} with {headroom:.0%} headroom (peak {gib(est.peak)})")
        if headroom < HEADROOM_TARGET:
            notes.append(
                f"under {HEADROOM_TARGET:.0%} headroom, allocator fragmentation can still run out of memory: "
                + (
                    "enable train.gradient_checkpointing"
                    if not work.gradient_checkpointing
                    else "lower train.batch_size"
                )
            )
        bigger = max_batch_size(profile, work, acc)
        if bigger >= 2 * b:
            most = f"{bigger} or more" if bigger >= MAX_BATCH else str(bigger)
            notes.append(f"micro-batches of up to {most} fit (train.batch_size)")
    else:
        notes.append(f"batch {b} does not fit on {acc.name}: peak {gib(est.peak)} > {gib(cap)}")
        fixes = _fixes(work, acc)
        at_b = next(((d, a) for d, a in fixes if estimate(profile, a, acc).peak <= cap), None)
        if at_b is not None:
            notes.append(f"{at_b[0]}: batch {b} fits (peak {gib(estimate(profile, at_b[1], acc).peak)})")
        smaller = max_batch_size(profile, work, acc)
        if smaller:
            notes.append(f"or lower the micro-batch: {accumulate(smaller)}")
        elif at_b is None:
            for words, alt in fixes:
                n = max_batch_size(profile, alt, acc)
                if n:
                    notes.append(f"{words}: batch {n} fits; {accumulate(n)}")
                    break
            else:
                larger = [
                    a.name
                    for a in sorted(ACCELERATORS, key=lambda a: a.memory_bytes)
                    if estimate(profile, work, a).peak <= a.memory_bytes
                ]
                notes.append(
                    f"not even batch 1 fits on {acc.name}, with qlora and gradient checkpointing: "
                    + (
                        f"the smallest accelerator that holds batch {b} as configured is {larger[0]}"
                        if larger
                        else "no listed accelerator holds it alone; shard it across several"
                    )
                )
    if not work.answer_only_logits and est.logits > 0.25 * est.forward_peak:
        notes.append(f"the logits take {human(est.logits)}: enable train.answer_only_logits")
    if work.distributed_strategy != "ddp":
        notes.append(
            f"per process without sharding: {work.distributed_strategy} spreads weights, gradients and "
            "optimizer state over the processes, so each holds less than this"
        )
    if acc.kind == "cpu" and work.image_cache_bytes:
        notes.append(
            f"not in the peak: the image feature cache grows with the data over the first epoch, up to "
            f"{human(work.image_cache_bytes)} of host memory (train.image_cache_gb)"
        )
    if work.dtype == "bfloat16" and acc.kind == "gpu" and not acc.bf16:
        notes.append(f"{acc.name} has no bfloat16: use model.dtype float16 or float32")
    return tuple(notes)


def make_plan(
    cfg: Config,
    *,
    accelerator: str | None = None,
    answer_tokens: int | None = None,
    images_per_sample: int | None = None,
    profile: ModelProfile | None = None,
) -> Plan:
    """The memory plan for a config on an accelerator (default: train.cost.accelerator)."""
    acc = get_accelerator(accelerator or cfg.train.cost.accelerator)
    profile = profile or model_profile(cfg.model, cfg.train)
    work = workload_from_config(
        cfg,
        acc,
        answer_tokens=answer_tokens,
        images_per_sample=images_per_sample,
        multimodal=profile.vision is not None,
    )
    est = estimate(profile, work, acc)
    off = estimate(profile, replace(work, gradient_checkpointing=False), acc)
    on_work = replace(work, gradient_checkpointing=True)
    on = estimate(profile, on_work, acc)
    return Plan(
        profile=profile,
        workload=work,
        accelerator=acc,
        estimate=est,
        without_checkpointing=off,
        with_checkpointing=on,
        max_batch_without_checkpointing=max_batch_size(
            profile, replace(work, gradient_checkpointing=False), acc
        ),
        max_batch_with_checkpointing=max_batch_size(profile, on_work, acc),
        recommendations=_recommend(profile, work, acc, est),
    )


def plan_json(p: Plan) -> dict[str, Any]:
    """The plan as JSON-ready data (bytes as integers)."""
    from dataclasses import asdict

    def breakdown(e: MemoryEstimate) -> dict[str, Any]:
        return {
            **asdict(e),
            "forward_peak": e.forward_peak,
            "step_peak": e.step_peak,
            "peak": e.peak,
            "peak_phase": e.peak_phase,
        }

    return {
        "model": asdict(p.profile),
        "workload": asdict(p.workload),
        "accelerator": {
            "name": p.accelerator.name,
            "kind": p.accelerator.kind,
            "memory_bytes": p.accelerator.memory_bytes,
        },
        "estimate": breakdown(p.estimate),
        "gradient_checkpointing": {
            "off": breakdown(p.without_checkpointing),
            "on": breakdown(p.with_checkpointing),
        },
        "fits": p.fits,
        "headroom": round(p.headroom, 4),
        "max_batch_size": p.max_batch,
        "max_batch_size_without_checkpointing": p.max_batch_without_checkpointing,
        "max_batch_size_with_checkpointing": p.max_batch_with_checkpointing,
        "recommendations": list(p.recommendations),
    }


# ------------------------------------------------------------------------- presentation
def render(p: Plan) -> Any:
    """The plan as rich renderables: the breakdown at both moments, the fit, the recommendations."""
    from rich.console import Group
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    e, w, prof, acc = p.estimate, p.workload, p.profile, p.accelerator
    params = prof.method(w.method)
    title = escape(
        f"{prof.spec} ({prof.family}, {count(prof.params)} params): {w.method}, {w.dtype}, "
        f"batch {w.batch_size} x {w.seq_len} tokens"
    )
    table = Table(title=title, header_style="bold", title_justify="left")
    table.add_column("component")
    table.add_column("forward", justify="right")
    table.add_column("optimizer step", justify="right")
    table.add_column("of what", overflow="fold")

    weights_note = (
        f"{count(prof.quantizable_params)} nf4 + {count(prof.params - prof.quantizable_params)} fp32"
        if w.method == "qlora"
        else f"{count(prof.params)} x {w.dtype}"
    )
    table.add_row("weights", human(e.weights), human(e.weights), weights_note)
    if w.method != "full":
        dora = " + DoRA" if w.method == "dora" else ""
        table.add_row(
            "adapter", human(e.adapter), human(e.adapter), f"LoRA r{w.lora_r}{dora}, {count(params.added)}"
        )
    table.add_row(
        "optimizer state",
        human(e.optimizer),
        human(e.optimizer),
        f"AdamW, {count(params.trainable)} trainable",
    )
    table.add_row(
        "gradients",
        human(e.gradients_in_forward),
        human(e.gradients),
        "kept across micro-batches" if w.gradient_accumulation_steps > 1 else "",
    )
    other = p.without_checkpointing if w.gradient_checkpointing else p.with_checkpointing
    table.add_row(
        "activations",
        human(e.activations),
        "-",
        f"{prof.text.layers} layers; checkpointing {'on' if w.gradient_checkpointing else 'off'}"
        f" (if {'off' if w.gradient_checkpointing else 'on'}: {human(other.activations)})",
    )
    if prof.vision is not None:
        table.add_row(
            "activations, vision",
            human(e.vision_activations),
            "-",
            f"{w.images_per_sample} x {prof.vision.patches_per_image} patches/sample, "
            + ("trained" if w.train_vision_tower else "frozen"),
        )
    logits_note = f"{w.answer_tokens} answer tokens/sample x {prof.text.vocab}"
    if not w.answer_only_logits:
        logits_note += " + every position"
    table.add_row("logits", human(e.logits), "-", logits_note)
    table.add_row(
        "framework",
        human(e.overhead),
        human(e.overhead),
        "imported stack" if acc.kind == "cpu" else "CUDA context",
        end_section=True,
    )
    fwd_peak = e.peak_phase == "forward pass"
    table.add_row(
        "[bold]total[/]",
        f"[bold]{gib(e.forward_peak)}[/]" if fwd_peak else gib(e.forward_peak),
        gib(e.step_peak) if fwd_peak else f"[bold]{gib(e.step_peak)}[/]",
        f"peak: {e.peak_phase}",
    )

    fit = Table(title=f"on {acc.name} ({gib(acc.memory_bytes)})", header_style="bold", title_justify="left")
    fit.add_column("gradient checkpointing")
    fit.add_column("peak", justify="right")
    fit.add_column("largest micro-batch", justify="right")
    for label, est, most in (
        ("off", p.without_checkpointing, p.max_batch_without_checkpointing),
        ("on", p.with_checkpointing, p.max_batch_with_checkpointing),
    ):
        current = (label == "on") == w.gradient_checkpointing
        fit.add_row(
            f"{label} (configured)" if current else label,
            gib(est.peak),
            f"{most}+" if most >= MAX_BATCH else str(most),
        )
    lines = [
        f"[green]✓[/] {escape(r)}" if i == 0 and p.fits else f"• {escape(r)}"
        for i, r in enumerate(p.recommendations)
    ]
    assumed = f"assumed: {w.answer_tokens} answer tokens per sample (--answer-tokens)"
    if prof.vision is not None:
        assumed += f", {w.images_per_sample} image(s) per sample (--images-per-sample)"
    lines.append(f"[dim]{assumed}; every sample padded to data.max_seq_length[/]")
    return Group(table, fit, Text.from_markup("\n".join(lines)))
