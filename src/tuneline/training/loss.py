"""Loss only where it is needed, and the Trainer subclass that computes it.

Short answers after long prompts (a label after a few hundred text and image tokens) make the full
LM head the biggest waste of a step: logits for every position times a 32k-262k vocabulary. The
models accept ``logits_to_keep`` as a (B, T) boolean mask and return only those rows (N, V); the
cross-entropy is computed here, since the models refuse ``labels`` together with a tensor mask. Using
``logits_to_keep`` rather than calling the LM head ourselves keeps model-specific steps such as
Gemma's final logit soft-capping. Measured (shared/notes/training-facts.md): equal losses to 1e-6,
and on a Gemma-3-style step with a 32k vocabulary 0.13 s / +49 MB instead of 1.22 s / +948 MB.

``TunelineTrainer`` is the stock transformers Trainer loop with four hooks: this loss (or the same
loss over full logits when ``answer_only`` is off; for classifier families the cross-entropy over classes
of training/sequence.py), per-sample loss weights (class-weighted loss),
our resumable :class:`~tuneline.training.sampling.EpochSampler`, and the image feature cache.
"""

from __future__ import annotations

import torch
from transformers import Trainer

from tuneline.training import masks
from tuneline.training.sequence import classification_loss

IGNORE = -100


def answer_only_loss(
    model, inputs: dict, num_items_in_batch=None, *, answer_only: bool = True, per_sample: bool = False
):
    """(summed-or-averaged cross-entropy over answer tokens, model outputs).

    ``inputs["loss_weight"]`` (optional): a weight per sample (B,) or per token (B, T); the loss is the
    weighted sum over answer tokens, normalised like the unweighted one. ``per_sample``: the mean over
    samples of each sample's mean token loss, so each sample's gradient depends on that sample alone
    (differentially private training, training/privacy.py).
    """
    labels = inputs["labels"]
    weight = inputs.get("loss_weight")
    targets = labels[:, 1:]
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = targets != IGNORE
    model_inputs = {k: v for k, v in inputs.items() if k not in ("labels", "loss_weight")}
    ready = masks.build(_config(model), model_inputs)
    if ready is not None:  # built in a few tensor ops instead of transformers' per-step mask functions
        model_inputs["attention_mask"] = ready
    if answer_only:
        outputs = model(**model_inputs, logits_to_keep=keep)
        logits = outputs.logits.reshape(-1, outputs.logits.shape[-1]).float()
    else:
        outputs = model(**model_inputs)
        logits = outputs.logits[keep].float()
    per_token = torch.nn.functional.cross_entropy(logits, targets[targets != IGNORE], reduction="none")
    if weight is not None:
        weight = weight.to(per_token.device, per_token.dtype)
        if weight.dim() == 1:
            weight = weight[:, None].expand_as(labels)
        per_token = per_token * weight[keep]
    if per_sample:
        row = keep.nonzero()[:, 0]
        sums = per_token.new_zeros(labels.shape[0]).index_add(0, row, per_token)
        counts = torch.bincount(row, minlength=labels.shape[0]).clamp(min=1)
        return (sums / counts).mean(), outputs
    loss = per_token.sum()
    if num_items_in_batch is None:
        return loss / max(int(keep.sum()), 1), outputs
    return loss / num_items_in_batch, outputs


_config = masks.model_config  # the transformers config under PEFT / DDP wrappers


class TunelineTrainer(Trainer):
    """The transformers Trainer; only the loss, the sampler and the image path are ours."""

    def __init__(
        self,
        *args,
        answer_only: bool = True,
        sampler=None,
        image_cache=None,
        classifier: bool = False,
        dp=None,
        distill=None,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.distill = distill  # train.distill (with train.teacher): soft targets, training/distill.py
        self.dp = dp  # a training.privacy.DpSession: Poisson batches, DPOptimizer, per-sample loss
        self.answer_only = answer_only
        self.classifier = classifier  # a sequence classifier: cross-entropy over classes (sequence.py)
        self.tuneline_sampler = sampler
        self.image_cache = image_cache
        self._flops_per_token: int | None = None
        self._modules: tuple[torch.nn.Module, list[torch.nn.Module]] | None = None
        self._trainable: tuple[torch.nn.Module, list[torch.nn.Parameter]] | None = None

    # Per-step costs of the stock loop that are fixed for a run, paid once here instead (on a small
    # model each walks every parameter or module in every step: ~3 ms apiece on the tiny Gemma 3).
    def floating_point_ops(self, inputs) -> int:
        """The Trainer's own estimate (6 x tokens x non-embedding parameters), the count taken once."""
        main = getattr(self.model, "main_input_name", "input_ids")
        count = getattr(self.model, "num_parameters", None)
        if main not in inputs or count is None:
            return 0
        if self._flops_per_token is None:
            self._flops_per_token = 6 * int(count(exclude_embeddings=True))
        return inputs[main].numel() * self._flops_per_token

    def training_step(self, model, inputs, num_items_in_batch=None):
        # The stock step calls model.train(), which walks every submodule each step; skip it when every
        # module is already in training mode (after evaluation they are not, and it runs).
        if self._modules is None or self._modules[0] is not model:
            self._modules = (model, list(model.modules()))
        if not all(m.training for m in self._modules[1]):
            return super().training_step(model, inputs, num_items_in_batch)
        model.train = lambda mode=True: model
        try:
            return super().training_step(model, inputs, num_items_in_batch)
        finally:
            del model.train

    def _clip_grad_norm(self, model):
        """Clip over the trainable parameters, listed once (the rest have no gradient): the same norm
        and clipping without walking every parameter twice per step. Sharded or parallel set-ups (and
        sagemaker's fp16) keep the stock path."""
        from accelerate.utils import DistributedType

        simple = (DistributedType.NO, DistributedType.MULTI_GPU, DistributedType.MULTI_CPU)
        if self.accelerator.distributed_type not in simple or self.args.fp16 or self.dp is not None:
            return super()._clip_grad_norm(model)
        return self.accelerator.clip_grad_norm_(self._trainable_of(model), self.args.max_grad_norm)

    def _trainable_of(self, model) -> list[torch.nn.Parameter]:
        if self._trainable is None or self._trainable[0] is not model:
            self._trainable = (model, [p for p in model.parameters() if p.requires_grad])
        return self._trainable[1]

    def get_train_dataloader(self):
        if self.dp is None:
            return super().get_train_dataloader()
        from torch.utils.data import DataLoader

        loader = DataLoader(
            self.train_dataset, batch_sampler=self.dp.sampler, collate_fn=self.data_collator, num_workers=0
        )
        return self.accelerator.prepare(loader)

    def create_optimizer(self, model=None):
        optimizer = super().create_optimizer(model)
        if self.dp is not None and self.dp.optimizer is None:
            self.optimizer = optimizer = self.dp.wrap_optimizer(optimizer)
        return optimizer

    def _get_train_sampler(self, train_dataset=None):
        if self.tuneline_sampler is not None:
            return self.tuneline_sampler
        return super()._get_train_sampler(train_dataset)

    def _run_epoch(self, **kwargs):
        # A resumed epoch under DDP reads through accelerate's skip_first_batches, whose wrappers do not
        # pass set_epoch on to our sampler: it would replay epoch 0's order. Set the epoch here.
        for sampler in (self.tuneline_sampler, self.dp and self.dp.sampler):
            if sampler is not None and hasattr(sampler, "set_epoch"):
                sampler.set_epoch(kwargs["epoch"])
        model = kwargs.get("model")
        if model is None or self.dp is not None:  # DP's per-sample gradients: the stock zero_grad
            return super()._run_epoch(**kwargs)
        # The stock loop's model.zero_grad() after each step walks every parameter; only the trainable
        # ones (listed once) can hold a gradient.
        trainable = self._trainable_of(model)

        def zero_grad(set_to_none: bool = True) -> None:
            for p in trainable:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad.zero_()

        model.zero_grad = zero_grad
        try:
            return super()._run_epoch(**kwargs)
        finally:
            del model.zero_grad

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.image_cache is not None:
            inputs = self.image_cache.apply(model, inputs)
        if self.dp is not None:
            num_items_in_batch = None  # per-sample losses: each sample's gradient is its own
        if self.distill is not None:
            from tuneline.training.distill import distill_loss

            num_items_in_batch = None  # a mean per batch: K rows per record, soft and hard terms
            loss, outputs = distill_loss(
                model, inputs, temperature=self.distill.temperature, alpha=self.distill.alpha
            )
        elif self.classifier:
            loss, outputs = classification_loss(model, inputs, num_items_in_batch)
        else:
            loss, outputs = answer_only_loss(
                model,
                inputs,
                num_items_in_batch,
                answer_only=self.answer_only,
                per_sample=self.dp is not None,
            )
        # Normalised over the whole accumulated batch when the Trainer counted its tokens, else per batch.
        self.loss_is_scaled_for_ga = num_items_in_batch is not None
        if num_items_in_batch is not None and self.args.average_tokens_across_devices:
            loss = (
                loss * self.accelerator.num_processes
            )  # the Trainer's own convention for token-averaged DDP
        return (loss, outputs) if return_outputs else loss


# The name earlier code and tests use.
AnswerOnlyTrainer = TunelineTrainer
