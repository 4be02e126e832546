"""Find a registered version by reference and load it: what serving and export build on.

    from tuneline.registry.resolve import load, resolve
    model, processor = load("models:/melanoma@champion")

References: ``models:/NAME@ALIAS``, ``NAME@ALIAS``, ``models:/NAME/VERSION``, ``NAME/VERSION``, or a bare
``NAME`` (its champion). ``resolve`` downloads the version's artifact (the adapter, or the model of a full
fine-tune) once into the cache folder and returns where it is with the version's lineage; ``load``
rebuilds the base model the version was trained on (checked against the recorded content hash) and
applies the adapter. Weights load only from safetensors: a pickle (``.bin``, ``.pt``, ...) is refused
unless ``allow_pickle=True``.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

from tuneline.errors import ModelError, RegistryError

log = logging.getLogger("tuneline.registry")

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    version: str
    aliases: list[str]
    source_dir: Path  # local folder: the adapter, or the whole model of a full fine-tune
    base_model: str  # as configured: hub id, local folder or tiny:<family>
    method: str  # lora, qlora, dora or full
    tags: dict[str, str] = field(default_factory=dict)
    source: str = ""  # the artifact URI in the registry
    run_id: str | None = None  # the MLflow run

    @property
    def ref(self) -> str:
        return f"{self.name}/{self.version}"


def parse_ref(ref: str) -> tuple[str, str | None, str | None]:
    """(name, alias, version) of a reference; a bare name means its champion."""
    text = ref.strip()
    if text.startswith("models:/"):
        text = text[len("models:/") :]
    if "/" in text:
        name, _, version = text.partition("/")
        if not version.isdigit():
            raise RegistryError(
                f"bad model reference {ref!r}: the part after '/' must be a version number",
                hint="use NAME@ALIAS, NAME/VERSION, models:/NAME@ALIAS or models:/NAME/VERSION",
            )
        return name, None, version
    if "@" in text:
        name, _, alias = text.rpartition("@")
        if not name or not alias:
            raise RegistryError(f"bad model reference {ref!r}", hint="use NAME@ALIAS, e.g. melanoma@champion")
        return name, alias, None
    if not text:
        raise RegistryError("empty model reference", hint="use NAME@ALIAS or NAME/VERSION")
    return text, "champion", None


def model_version(c, ref: str):
    """The MLflow ModelVersion a reference points at."""
    name, alias, version = parse_ref(ref)
    try:
        if alias is not None:
            return c.get_model_version_by_alias(name, alias)
        return c.get_model_version(name, version)
    except Exception as exc:  # noqa: BLE001 - RestException / MlflowException
        what = f"alias {alias!r}" if alias is not None else f"version {version}"
        raise RegistryError(
            f"{name!r} has no {what} in the registry ({getattr(exc, 'message', exc)})",
            hint=f"see `tuneline models list {name}`",
        ) from exc


def refuse_pickles(folder: Path, *, allow_pickle: bool, what: str) -> list[Path]:
    """Pickled weight files in ``folder``: an error unless ``allow_pickle`` (then they are returned)."""
    found = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in PICKLE_SUFFIXES)
    if found and not allow_pickle:
        raise ModelError(
            f"{what} holds pickled files ({', '.join(p.name for p in found[:5])}); tuneline never unpickles "
            "by default: a pickle can run arbitrary code when loaded",
            hint="convert them to safetensors, or pass --allow-pickle (allow_pickle=True) if you trust "
            f"where {folder} came from",
        )
    return found


def resolve(ref: str, tracking_uri: str | None = None, *, client=None) -> RegisteredModel:
    """The version ``ref`` points at, its artifact downloaded to a local folder."""
    from tuneline.registry import store

    c = client or store.client(tracking_uri, must_exist=True)
    mv = model_version(c, ref)
    tags = dict(mv.tags or {})
    from tuneline.models.load import cache_root

    uri = getattr(c, "tracking_uri", None) or tracking_uri
    key = hashlib.sha256(f"{uri}|{mv.name}|{mv.version}|{mv.source}".encode()).hexdigest()[:20]
    source_dir = store.download_dir(
        mv.source, cache_root() / "registry" / key, tracking_uri=uri, what=f"{mv.name} version {mv.version}"
    )
    base = tags.get("tuneline.base_model")
    if not base:
        raise RegistryError(
            f"{mv.name} version {mv.version} has no tuneline.base_model tag: not registered by tuneline",
            hint="register run directories with `tuneline models register RUN_DIR`",
        )
    return RegisteredModel(
        name=mv.name,
        version=str(mv.version),
        aliases=list(mv.aliases or []),
        source_dir=source_dir,
        base_model=base,
        method=tags.get("tuneline.method", "lora"),
        tags=tags,
        source=mv.source,
        run_id=mv.run_id,
    )


def resolve_base_of(rm: RegisteredModel, *, verify_base: bool = True):
    """The base model ``rm`` was trained on, found the same way training found it; its content hash must
    match the one recorded at registration (else the adapter would sit on different weights)."""
    from tuneline.config.schema import ModelConfig
    from tuneline.models.load import resolve_base

    tags = rm.tags
    cfg = ModelConfig(
        base=rm.base_model,
        revision=tags.get("tuneline.base_model_hub_revision"),
        family=tags.get("tuneline.base_model_family"),
        dtype=tags.get("tuneline.model_dtype", "float32"),
    )
    base = resolve_base(cfg)
    recorded = tags.get("tuneline.base_model_content_hash")
    if verify_base and recorded and recorded != base.content_hash:
        raise ModelError(
            f"the base model {rm.base_model!r} found here ({base.folder}) is not the one {rm.ref} was "
            f"trained on: content hash {base.content_hash[:12]}…, recorded {recorded[:12]}…",
            hint="make the recorded base available (same revision), or pass verify_base=False to load anyway",
        )
    return base


def load(
    ref: str,
    tracking_uri: str | None = None,
    device: str = "cpu",
    *,
    dtype: str | None = None,
    allow_pickle: bool = False,
    verify_base: bool = True,
    client=None,
):
    """(model, processor) of a registered version: the base with the adapter applied (unmerged), in eval
    mode on ``device``. ``processor`` is tuneline's ChatProcessor (``.inner`` is the transformers one)."""
    from tuneline.models.load import load_processor

    rm = resolve(ref, tracking_uri, client=client)
    base = resolve_base_of(rm, verify_base=verify_base)
    model = load_registered(rm, dtype=dtype, allow_pickle=allow_pickle, base=base)
    return model.to(device), load_processor(base)


def load_registered(
    rm: RegisteredModel,
    *,
    dtype: str | None = None,
    allow_pickle: bool = False,
    verify_base: bool = True,
    merged: bool = False,
    base=None,
):
    """The model of a resolved version; ``merged``: the adapter folded into full-precision base weights
    (a QLoRA base is then loaded unquantized). ``base``: the version's base from :func:`resolve_base_of`,
    where the caller has it already (finding it hashes the whole checkpoint)."""
    from tuneline.models.load import load_model

    dtype = dtype or rm.tags.get("tuneline.model_dtype", "float32")
    base = base or resolve_base_of(rm, verify_base=verify_base)
    refuse_pickles(rm.source_dir, allow_pickle=allow_pickle, what=f"the registered artifact of {rm.ref}")
    if not any(base.folder.glob("*.safetensors")):
        refuse_pickles(base.folder, allow_pickle=allow_pickle, what=f"the base model folder {base.folder}")
    if rm.method == "full":
        model = load_model(base, dtype, folder=rm.source_dir, allow_pickle=allow_pickle)
    else:
        from peft import PeftModel

        quantize = rm.method == "qlora" and not merged
        model = load_model(base, dtype, quantize_4bit=quantize, allow_pickle=allow_pickle)
        try:
            # (pickles were refused above unless allowed; PEFT prefers adapter_model.safetensors)
            model = PeftModel.from_pretrained(model, rm.source_dir)
        except (OSError, ValueError) as exc:
            raise ModelError(f"could not apply the adapter of {rm.ref} from {rm.source_dir}: {exc}") from exc
        if merged:
            model = model.merge_and_unload()
    return model.eval()
