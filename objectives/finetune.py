"""Training loop for the baseline, for fine-tuning a pruned model and for QAT (SGD, cosine schedule).

Fine-tuning may also learn from the baseline's outputs (knowledge distillation, Hinton et al.,
2015): the loss is ``(1 - w) * CE + w * T^2 * KL(student/T || teacher/T)``. The training images
are fixed tensors (no augmentation), so the teacher's logits are computed once per study and
distillation costs no teacher forward pass per step.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F


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
               settings: TrainSettings, teacher_logits: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy on the batch ``index``, mixed with distillation from ``teacher_logits`` if asked."""
    logits = model(images[index])
    loss = F.cross_entropy(logits, labels[index])
    if teacher_logits is None or settings.distill <= 0:
        return loss
    t = settings.temperature
    soft = F.kl_div(F.log_softmax(logits / t, dim=1), F.softmax(teacher_logits[index] / t, dim=1),
                    reduction="batchmean") * t * t
    return (1 - settings.distill) * loss + settings.distill * soft


def run_epochs(model: nn.Module, optimizer: torch.optim.Optimizer, count: int, settings: TrainSettings,
               step_loss: Callable[[torch.Tensor], torch.Tensor],
               on_epoch: Callable[[int, float], None] | None = None) -> list[float]:
    """``settings.epochs`` passes over ``count`` samples in seeded random batches under a cosine
    schedule; ``step_loss(index)`` is one batch's loss. Returns each epoch's mean loss."""
    generator = torch.Generator().manual_seed(settings.seed)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, settings.epochs * math.ceil(count / settings.batch_size))
    losses = []
    for epoch in range(settings.epochs):
        model.train()
        order = torch.randperm(count, generator=generator)
        total = 0.0
        for start in range(0, count, settings.batch_size):
            index = order[start : start + settings.batch_size]
            if len(index) < 2:  # BatchNorm needs two samples
                continue
            optimizer.zero_grad(set_to_none=True)
            loss = step_loss(index)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(index)
        losses.append(total / count)
        if not math.isfinite(losses[-1]):
            break  # diverged: the caller sees a collapsed network
        if on_epoch:
            on_epoch(epoch, losses[-1])
    model.eval()
    return losses


def sgd(parameters, settings: TrainSettings, factory=torch.optim.SGD) -> torch.optim.Optimizer:
    return factory(parameters, lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay,
                   nesterov=True)


def train(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, settings: TrainSettings,
          on_epoch: Callable[[int, float], None] | None = None,
          teacher_logits: torch.Tensor | None = None) -> list[float]:
    """Train in place; returns the mean loss of each epoch. ``on_epoch(epoch, loss)`` reports progress."""
    if settings.epochs <= 0:
        return []
    return run_epochs(model, sgd(model.parameters(), settings), len(images), settings,
                      lambda index: batch_loss(model, images, labels, index, settings, teacher_logits), on_epoch)


@torch.no_grad()
def logits_of(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """The model's logits for every image, in eval mode (a teacher's, once per study)."""
    was_training = model.training
    model.eval()
    out = torch.cat([model(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])
    model.train(was_training)
    return out
