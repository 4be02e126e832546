"""What test_families.py does not reach: padded batches through the training loss and generation, Llama 4
tiling, Pixtral in the LLaVA layout, Mllama's cross-attention inputs."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from tests.models.test_families import CHAT_FAMILIES, _record
from tuneline.config.schema import ModelConfig
from tuneline.models.families import get_family
from tuneline.models.load import load_model, load_processor, resolve_base
from tuneline.training.collate import IGNORE, ChatCollator
from tuneline.training.loss import answer_only_loss


@pytest.fixture(scope="module")
def red(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "red.png"
    Image.new("RGB", (40, 40), (220, 30, 30)).save(path)
    return str(path)


@pytest.mark.parametrize("name", CHAT_FAMILIES)  # chat models: answer tokens
def test_padded_batch_trains_on_answers_and_generates(name, red):
    resolved = resolve_base(ModelConfig(base=f"tiny:{name}"))
    processor = load_processor(resolved)
    image = red if resolved.family.multimodal else None
    records = [_record(image, "red"), _record(image, "red green blue yellow")]
    batch = ChatCollator(processor, max_seq_length=128)(records)

    # Right padding (some processors default to left), and each row labels exactly its own answer.
    assert batch["attention_mask"][:, 0].all() and not batch["attention_mask"][0, -1]
    for row, record in zip(batch["labels"], records, strict=True):
        text = processor.tokenizer.decode(row[row != IGNORE], skip_special_tokens=True)
        assert text.strip() == record.answer

    # The training loss (LM head at answer positions only) equals the model's own full-logit loss.
    model = load_model(resolved).eval()
    with torch.no_grad():
        full = model(**batch).loss
        answer_only, _ = answer_only_loss(model, batch)
    assert torch.allclose(full, answer_only, atol=1e-5), (float(full), float(answer_only))

    # Generation from left-padded prompts, as evaluation does.
    texts = [processor.render(r.prompt_messages, add_generation_prompt=True) for r in records]
    images = [[Image.open(red).convert("RGB")] for _ in records] if image else None
    prompt = processor.encode(texts, images, padding_side="left")
    assert prompt["attention_mask"][:, -1].all()
    with torch.no_grad():
        out = model.generate(
            **prompt,
            max_new_tokens=3,
            do_sample=False,
            eos_token_id=processor.stop_token_ids,
            pad_token_id=processor.pad_token_id,
        )
    assert out.shape[0] == 2 and out.shape[1] > prompt["input_ids"].shape[1]


def test_llama4_tiles_large_images_like_the_stock_processor():
    from tuneline.models.families.llama4 import best_fit, supported_resolutions

    # Checked against transformers' torchvision implementation (its helpers, run without torchvision).
    tilings = {(1, 5), (5, 1), (1, 4), (2, 2), (4, 1), (1, 3), (3, 1), (1, 2), (2, 1), (1, 1)}
    assert set(supported_resolutions(5, 224)) == {(h * 224, w * 224) for h, w in tilings}
    canvases = ((224, 672), (672, 224), (224, 448), (448, 224), (224, 224))
    assert best_fit((200, 300), canvases, to_max=False) == (224, 448)

    resolved = resolve_base(ModelConfig(base="tiny:llama4"))
    processor = load_processor(resolved)
    tokenizer = processor.tokenizer
    images = [Image.new("RGB", (64, 40), (0, 200, 0)), Image.new("RGB", (20, 20))]
    text = f"{tokenizer.bos_token}two<|image|>images<|image|>"
    enc = processor.inner(text=[text], images=[images], max_patches=4, return_tensors="pt")
    # 40x64 -> a 2x2 canvas: 4 tiles plus a global one; the small image stays one tile.
    assert enc["pixel_values"].shape == (6, 3, 32, 32)
    ids = enc["input_ids"][0]
    assert int((ids == tokenizer.convert_tokens_to_ids("<|patch|>")).sum()) == 6 * 4
    assert int((ids == tokenizer.convert_tokens_to_ids("<|tile_y_separator|>")).sum()) == 2
    model = load_model(resolved)
    with torch.no_grad():
        assert model(**enc).logits.shape[:2] == (1, len(ids))


def test_pixtral_in_llava_layout_loads_through_the_llava_family(tmp_path, red):
    from tuneline.models.families.mistral3 import PixtralProcessor, build_tiny_llava_pixtral

    folder = tmp_path / "pixtral-llava"
    folder.mkdir()
    build_tiny_llava_pixtral(folder, seed=0)
    resolved = resolve_base(ModelConfig(base=str(folder)))
    assert resolved.family.name == "llava"
    processor = load_processor(resolved)
    assert type(processor.inner) is PixtralProcessor  # the stock one needs torchvision
    batch = ChatCollator(processor, max_seq_length=128)([_record(red, "red")])
    names = {processor.tokenizer.convert_tokens_to_ids(t) for t in ("[IMG]", "[IMG_BREAK]", "[IMG_END]")}
    assert names <= processor.image_token_ids
    ids = batch["input_ids"][0].tolist()
    assert ids.count(processor.tokenizer.convert_tokens_to_ids("[IMG]")) == 16  # 32 px / patch 8, no merge
    model = load_model(resolved)
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    loss = model(**batch).loss
    loss.backward()
    assert torch.isfinite(loss)


def test_mllama_images_enter_through_cross_attention(red):
    resolved = resolve_base(ModelConfig(base="tiny:mllama"))
    processor = load_processor(resolved)
    batch = ChatCollator(processor, max_seq_length=128)([_record(red, "red")])
    ids = batch["input_ids"][0]
    image_id = processor.tokenizer.convert_tokens_to_ids("<|image|>")
    assert int((ids == image_id).sum()) == 1  # one token per image: no placeholder run
    first = int((ids == image_id).nonzero()[0])
    mask = batch["cross_attention_mask"][0, :, 0].any(-1)
    assert not mask[:first].any() and mask[first:].all()  # text before the image does not see it
    model = load_model(resolved).eval()
    with torch.no_grad():
        with_image = model(**batch).logits
        other = dict(batch, pixel_values=torch.zeros_like(batch["pixel_values"]))
        without = model(**other).logits
    # The preset opens the cross-attention gates, so the image changes the answer logits.
    assert not torch.allclose(with_image[0, first:], without[0, first:])
    assert get_family("mllama").image_tokens == ("<|image|>",)
