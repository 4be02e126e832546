from __future__ import annotations

import shutil
import time

import pytest
import torch

from tuneline.config.schema import ModelConfig
from tuneline.errors import ModelError
from tuneline.models.families import get_family
from tuneline.models.load import folder_content_hash, load_model, load_processor, resolve_base, tiny_folder


@pytest.mark.parametrize(
    "family,auto_class", [("gemma3", "Gemma3ForConditionalGeneration"), ("llama", "LlamaForCausalLM")]
)
def test_tiny_preset_round_trips_through_from_pretrained(family, auto_class, tmp_path):
    resolved = resolve_base(ModelConfig(base=f"tiny:{family}"))
    assert resolved.kind == "tiny" and resolved.family.name == family
    assert (resolved.folder / "config.json").is_file() and list(resolved.folder.glob("*.safetensors"))
    model = load_model(resolved)
    assert type(model).__name__ == auto_class
    processor = load_processor(resolved)
    text = processor.render(
        [{"role": "user", "content": [{"type": "text", "text": "what colour is it"}]}],
        add_generation_prompt=True,
    )
    ids = processor.encode([text])["input_ids"]
    assert processor.tokenizer.decode(ids[0]) == text  # byte-level BPE is lossless

    # Reload the saved checkpoint: same logits as a second load of the same folder.
    again = load_model(resolve_base(ModelConfig(base=f"tiny:{family}")))
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, again(input_ids=ids).logits)


def test_tiny_build_is_deterministic(tmp_path, monkeypatch):
    first = tiny_folder(get_family("llama"))
    monkeypatch.setenv("TUNELINE_CACHE_DIR", str(tmp_path))
    second = tiny_folder(get_family("llama"))
    assert first != second
    assert folder_content_hash(first) == folder_content_hash(second)


def test_tiny_gemma3_has_a_live_projector_and_real_processor():
    resolved = resolve_base(ModelConfig(base="tiny:gemma3"))
    model = load_model(resolved)
    assert model.model.multi_modal_projector.mm_input_projection_weight.abs().sum() > 0
    processor = load_processor(resolved)
    assert type(processor.inner).__name__ == "Gemma3Processor"
    assert processor.image_token_ids  # soft token, boi, eoi


def test_local_folder_is_loaded_with_content_hash(tmp_path):
    src = resolve_base(ModelConfig(base="tiny:llama")).folder
    local = tmp_path / "my-model"
    shutil.copytree(src, local)
    resolved = resolve_base(ModelConfig(base=str(local)))
    assert resolved.kind == "local" and resolved.family.name == "llama"
    assert resolved.content_hash == folder_content_hash(src)
    assert type(load_model(resolved)).__name__ == "LlamaForCausalLM"


def test_unknown_family_suggests_the_right_one():
    with pytest.raises(ModelError) as info:
        resolve_base(ModelConfig(base="tiny:gemma"))
    assert "unknown model family 'gemma'" in str(info.value) and "gemma3" in str(info.value)


def test_missing_hub_model_fails_at_once_offline():
    started = time.time()
    with pytest.raises(ModelError) as info:
        resolve_base(ModelConfig(base="nobody-has/this-model"))
    assert time.time() - started < 60  # no network lookup with retries (minutes): a hang guard
    assert "not in the local hub cache" in str(info.value) and "HF_HUB_OFFLINE" in str(info.value)


def test_folder_that_is_not_a_checkpoint(tmp_path):
    with pytest.raises(ModelError, match="no config.json"):
        resolve_base(ModelConfig(base=str(tmp_path)))


@pytest.mark.parametrize("family", ["gemma3", "llama"])
def test_tiny_sizes_are_the_same_architecture_growing(family):
    """tiny:<family>@s|m|l: one architecture at three sizes; @s is the unsized preset itself."""
    plain = resolve_base(ModelConfig(base=f"tiny:{family}"))
    assert resolve_base(ModelConfig(base=f"tiny:{family}@s")).folder == plain.folder
    counts, kinds = [], set()
    for size in ("s", "m", "l"):
        resolved = resolve_base(ModelConfig(base=f"tiny:{family}@{size}"))
        model = load_model(resolved)
        kinds.add(type(model).__name__)
        text = model.config.get_text_config()
        counts.append((text.hidden_size, text.num_hidden_layers, sum(p.numel() for p in model.parameters())))
        ids = load_processor(resolved).encode(["<bos>hello"])["input_ids"]
        with torch.no_grad():
            assert torch.isfinite(model(input_ids=ids).logits).all()
    assert len(kinds) == 1
    hidden, layers, params = zip(*counts, strict=True)
    assert hidden[0] < hidden[1] < hidden[2] and layers[0] < layers[1] < layers[2]
    assert params[0] < params[1] < params[2]


def test_tiny_size_errors_name_the_sizes():
    with pytest.raises(ModelError, match="no size 'xl'") as info:
        resolve_base(ModelConfig(base="tiny:llama@xl"))
    assert "s, m, l" in str(info.value.hint)
    with pytest.raises(ModelError, match="no size 'm'") as info:
        resolve_base(ModelConfig(base="tiny:bert@m"))
    assert "gemma3" in str(info.value.hint) and "llama" in str(info.value.hint)


def test_tiny_big_size_outweighs_l_without_building_it():
    """tiny:<family>@big (the benchmark's dearer fallback): one architecture, wider and deeper than @l."""
    from tuneline.models.load import parse_tiny
    from tuneline.models.tiny import TINY_SIZES

    family, size = parse_tiny("tiny:gemma3@big")
    assert size == "big" and "big" in family.tiny_sizes
    big, large = TINY_SIZES["big"], TINY_SIZES["l"]
    assert big["hidden_size"] > large["hidden_size"] and big["num_hidden_layers"] > large["num_hidden_layers"]
    assert big["hidden_size"] % big["num_attention_heads"] == 0
