"""Training loop for the baseline and for fine-tuning a pruned model (SGD, cosine schedule)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn


@dataclass(frozen=True)
class TrainSettings:
    epochs: int
    lr: float
    batch_size: int = 128
    momentum: float = 0.9
    weight_decay: float = 5e-4
    seed: int = 0


def train(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, settings: TrainSettings,
          on_epoch: Callable[[int, float], None] | None = None) -> list[float]:
    """Train in place; returns the mean loss of each epoch. ``on_epoch(epoch, loss)`` reports progress."""
    if settings.epochs <= 0:
        return []
    generator = torch.Generator().manual_seed(settings.seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=settings.lr, momentum=settings.momentum,
                                weight_decay=settings.weight_decay, nesterov=True)
    steps_per_epoch = math.ceil(len(images) / settings.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, settings.epochs * steps_per_epoch)
    loss_fn = nn.CrossEntropyLoss()
    losses = []
    for epoch in range(settings.epochs):
        model.train()
        order = torch.randperm(len(images), generator=generator)
        total = 0.0
        for start in range(0, len(images), settings.batch_size):
            index = order[start : start + settings.batch_size]
            if len(index) < 2:  # BatchNorm needs two samples
                continue
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(images[index]), labels[index])
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(index)
        losses.append(total / len(images))
        if not math.isfinite(losses[-1]):
            break  # diverged: the caller sees a collapsed network
        if on_epoch:
            on_epoch(epoch, losses[-1])
    model.eval()
    return losses
