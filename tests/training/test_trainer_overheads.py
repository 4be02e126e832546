"""TunelineTrainer's once-per-run shortcuts for the stock loop's per-step walks give the stock results."""

from __future__ import annotations

import torch
from transformers import Trainer, TrainingArguments

from tuneline.config.schema import ModelConfig, TrainConfig
from tuneline.data.records import Record
from tuneline.models.load import load_model, load_processor, resolve_base
from tuneline.training.adapters import prepare_for_training
from tuneline.training.collate import ChatCollator
from tuneline.training.loss import TunelineTrainer


def _setup(tmp_path):
    resolved = resolve_base(ModelConfig(base="tiny:llama"))
    processor = load_processor(resolved)
    records = [
        Record(
            id=str(i),
            source="t",
            messages=[
                {"role": "user", "content": [{"type": "text", "text": f"question {i}?"}]},
                {"role": "assistant", "content": [{"type": "text", "text": a}]},
            ],
        )
        for i, a in enumerate(["yes", "a longer answer"])
    ]
    batch = ChatCollator(processor, 128)(records)
    torch.manual_seed(0)
    model = prepare_for_training(load_model(resolved), TrainConfig(), resolved.family)
    for p in model.parameters():
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.5)
    args = TrainingArguments(
        output_dir=str(tmp_path), use_cpu=True, report_to="none", max_grad_norm=0.01, disable_tqdm=True
    )
    return TunelineTrainer(model=model, args=args, train_dataset=records), batch


def test_flops_and_clipping_equal_the_stock_trainer(tmp_path):
    trainer, batch = _setup(tmp_path)
    assert trainer.floating_point_ops(batch) == Trainer.floating_point_ops(trainer, batch) > 0
    model = trainer.model
    trainer.compute_loss(model, dict(batch)).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    stock = Trainer._clip_grad_norm(trainer, model)
    stock_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    for n, p in model.named_parameters():
        if n in grads:
            p.grad.copy_(grads[n])
    ours = trainer._clip_grad_norm(model)
    assert torch.allclose(torch.as_tensor(ours), torch.as_tensor(stock))
    assert float(stock) > 0.01  # the clipping changed the gradients
    for n, p in model.named_parameters():
        if n in grads:
            assert torch.equal(p.grad, stock_grads[n]), n


def test_training_step_restores_train_mode_after_eval(tmp_path):
    trainer, batch = _setup(tmp_path)
    model = trainer.model
    trainer.create_optimizer_and_scheduler(num_training_steps=4)
    trainer.current_gradient_accumulation_steps = 1  # set by train() in the stock loop
    model.train()
    trainer.training_step(model, dict(batch))  # every module training: model.train() skipped
    assert "train" not in vars(model) and all(m.training for m in model.modules())
    model.eval()  # as evaluation leaves it
    trainer.training_step(model, dict(batch))
    assert all(m.training for m in model.modules())
    model.get_base_model().model.layers[0].eval()  # a submodule alone left eval mode: still restored
    trainer.training_step(model, dict(batch))
    assert all(m.training for m in model.modules())
