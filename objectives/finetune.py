"""Training loop for the baseline, for fine-tuning a pruned model and for QAT (SGD, cosine schedule).

Fine-tuning may also learn from the baseline's outputs (knowledge distillation, Hinton et al.,
2015): the loss is ``(1 - w) * CE + w * T^2 * KL(student/T || teacher/T)``. The training images
are fixed (no augmentation, in memory or streamed), so the teacher's logits are computed once per
study and distillation costs no teacher forward pass per step.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from .accelerator import CPU, Accelerator
from .data import Samples, as_samples


@dataclass(frozen=True)
class TrainSettings:
    epochs: int
    lr: float
    batch_size: int = 128
    momentum: float = 0.9
    weight_decay: float = 5e-4
    seed: int = 0
    distill: float = 0.0  # weight of the distillation term (0: labels only)
    temperature: float = 4.0


def batch_loss(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, index: torch.Tensor,
               settings: TrainSettings, teacher_logits: torch.Tensor | None = None, on: Accelerator = CPU) -> torch.Tensor:
    """Cross-entropy on one batch (``images`` and ``labels`` on ``on``'s device; ``index``: which samples
    they are), mixed with distillation from ``teacher_logits`` (looked up by ``index``) if asked."""
    with on.autocast():  # softmax, log-softmax and the losses run in f32 under autocast
        logits = model(images)
        loss = F.cross_entropy(logits, labels)
        if teacher_logits is None or settings.distill <= 0:
            return loss
        t = settings.temperature
        soft = F.kl_div(F.log_softmax(logits / t, dim=1), F.softmax(on.batch(teacher_logits, index) / t, dim=1),
                        reduction="batchmean") * t * t
        return (1 - settings.distill) * loss + settings.distill * soft


def run_epochs(model: nn.Module, optimizer: torch.optim.Optimizer, samples: Samples, settings: TrainSettings,
               step_loss: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
               on_epoch: Callable[[int, float], None] | None = None, on: Accelerator = CPU) -> list[float]:
    """``settings.epochs`` passes over ``samples`` in seeded random batches under a cosine schedule;
    ``step_loss(images, labels, index)`` is one batch's loss (all three on ``on``'s device). Returns each
    epoch's mean loss. The batch order comes from a CPU generator: the same on every device, in memory
    or streamed."""
    count = len(samples)
    generator = torch.Generator().manual_seed(settings.seed)
    scaler = on.scaler()
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, settings.epochs * math.ceil(count / settings.batch_size))
    losses = []
    with on.repeatable():
        for epoch in range(settings.epochs):
            model.train()
            order = torch.randperm(count, generator=generator)
            total = torch.zeros((), device=on.device)  # summed on the device: no GPU sync per step
            for images, labels, index in samples.batches(order, settings.batch_size, on):
                if len(index) < 2:  # BatchNorm needs two samples
                    continue
                optimizer.zero_grad(set_to_none=True)
                loss = step_loss(images, labels, index)
                if scaler is None:
                    loss.backward()
                    optimizer.step()
                else:
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                schedule.step()
                total += loss.detach().float() * len(index)
            losses.append(total.item() / count)
            if not math.isfinite(losses[-1]):
                break  # diverged: the caller sees a collapsed network
            if on_epoch:
                on_epoch(epoch, losses[-1])
    model.eval()
    return losses


def sgd(parameters, settings: TrainSettings, factory=torch.optim.SGD) -> torch.optim.Optimizer:
    return factory(parameters, lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay,
                   nesterov=True)


def train(model: nn.Module, images: torch.Tensor | Samples, labels: torch.Tensor | None, settings: TrainSettings,
          on_epoch: Callable[[int, float], None] | None = None,
          teacher_logits: torch.Tensor | None = None, on: Accelerator = CPU) -> list[float]:
    """Train in place on ``on``'s device (the model is left there); returns the mean loss of each epoch.
    ``images``: a tensor with its ``labels``, or a split (:class:`Samples`, labels None).
    ``on_epoch(epoch, loss)`` reports progress."""
    if settings.epochs <= 0:
        return []
    model.to(on.device)  # before the optimizer: it holds the parameters where they train
    samples = as_samples(images, labels).placed(on)
    teacher_logits = None if teacher_logits is None else on.place(teacher_logits)
    return run_epochs(model, sgd(model.parameters(), settings), samples, settings,
                      lambda x, y, index: batch_loss(model, x, y, index, settings, teacher_logits, on), on_epoch, on)


@torch.no_grad()
def logits_of(model: nn.Module, images: torch.Tensor | Samples, batch_size: int = 256, on: Accelerator = CPU) -> torch.Tensor:
    """The model's f32 logits for every image (a tensor or a split, in its order), in eval mode, on
    ``on``'s device where the model is (a teacher's, once per study)."""
    was_training = model.training
    model.eval()
    with on.repeatable():
        out = torch.cat([model(x) for x, _, _ in as_samples(images).batches(None, batch_size, on)])
    model.train(was_training)
    return out
