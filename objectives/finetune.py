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

from .accelerator import CPU, Accelerator


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
    """Cross-entropy on the batch ``index``, mixed with distillation from ``teacher_logits`` if asked."""
    with on.autocast():  # softmax, log-softmax and the losses run in f32 under autocast
        logits = model(on.batch(images, index))
        loss = F.cross_entropy(logits, on.batch(labels, index))
        if teacher_logits is None or settings.distill <= 0:
            return loss
        t = settings.temperature
        soft = F.kl_div(F.log_softmax(logits / t, dim=1), F.softmax(on.batch(teacher_logits, index) / t, dim=1),
                        reduction="batchmean") * t * t
        return (1 - settings.distill) * loss + settings.distill * soft


def run_epochs(model: nn.Module, optimizer: torch.optim.Optimizer, count: int, settings: TrainSettings,
               step_loss: Callable[[torch.Tensor], torch.Tensor],
               on_epoch: Callable[[int, float], None] | None = None, on: Accelerator = CPU) -> list[float]:
    """``settings.epochs`` passes over ``count`` samples in seeded random batches under a cosine
    schedule; ``step_loss(index)`` is one batch's loss (``index`` on ``on``'s device). Returns each
    epoch's mean loss. The batch order comes from a CPU generator: the same on every device."""
    generator = torch.Generator().manual_seed(settings.seed)
    scaler = on.scaler()
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, settings.epochs * math.ceil(count / settings.batch_size))
    losses = []
    with on.repeatable():
        for epoch in range(settings.epochs):
            model.train()
            order = torch.randperm(count, generator=generator).to(on.device)
            total = torch.zeros((), device=on.device)  # summed on the device: no GPU sync per step
            for start in range(0, count, settings.batch_size):
                index = order[start : start + settings.batch_size]
                if len(index) < 2:  # BatchNorm needs two samples
                    continue
                optimizer.zero_grad(set_to_none=True)
                loss = step_loss(index)
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


def train(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, settings: TrainSettings,
          on_epoch: Callable[[int, float], None] | None = None,
          teacher_logits: torch.Tensor | None = None, on: Accelerator = CPU) -> list[float]:
    """Train in place on ``on``'s device (the model is left there); returns the mean loss of each epoch.
    ``on_epoch(epoch, loss)`` reports progress."""
    if settings.epochs <= 0:
        return []
    model.to(on.device)  # before the optimizer: it holds the parameters where they train
    images, labels = on.place(images), on.place(labels)
    teacher_logits = None if teacher_logits is None else on.place(teacher_logits)
    return run_epochs(model, sgd(model.parameters(), settings), len(images), settings,
                      lambda index: batch_loss(model, images, labels, index, settings, teacher_logits, on), on_epoch, on)


@torch.no_grad()
def logits_of(model: nn.Module, images: torch.Tensor, batch_size: int = 256, on: Accelerator = CPU) -> torch.Tensor:
    """The model's f32 logits for every image, in eval mode, on ``on``'s device where the model is
    (a teacher's, once per study)."""
    was_training = model.training
    model.eval()
    with on.repeatable():
        out = torch.cat([model(images[i:i + batch_size].to(on.device)) for i in range(0, len(images), batch_size)])
    model.train(was_training)
    return out
