"""The model and the run, from their config: shapes and parameter counts built on the meta device."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuneline.errors import ModelError
from tuneline.training.plan.catalogue import DYNAMIC_IMAGE_PATCHES, Accelerator, Dtype, Method, PlanError

if TYPE_CHECKING:
    from tuneline.config.schema import Config, ModelConfig, TrainConfig
    from tuneline.models.families import ModelFamily


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
