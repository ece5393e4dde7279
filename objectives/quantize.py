"""Quantization-aware fine-tuning with NNI's ``QATQuantizer``.

NNI simulates int8 (fake quantization of weights and inputs) on the layers of the int8 groups
while the pruned model is fine-tuned, so their weights become robust to int8. NNI produces no
faster model by itself: the real int8 model comes from the device adapter (NNCF for OpenVINO).
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .finetune import TrainSettings


def qat_config(layers: list[str]) -> list[dict]:
    return [{"op_names": list(layers), "target_names": ["_input_", "weight"], "quant_dtype": "int8",
             "quant_scheme": "symmetric", "granularity": "default"}]


def qat_finetune(model: nn.Module, layers: list[str], images: torch.Tensor, labels: torch.Tensor,
                 settings: TrainSettings) -> list[float]:
    """Fine-tune ``model`` in place with NNI QAT on ``layers``; returns the loss of each epoch."""
    import nni
    from nni.compression.quantization import QATQuantizer
    from nni.compression.utils import TorchEvaluator

    if settings.epochs <= 0 or not layers:
        return []
    losses: list[float] = []
    generator = torch.Generator().manual_seed(settings.seed)
    steps_per_epoch = math.ceil(len(images) / settings.batch_size)

    def training_step(batch, model, *args, **kwargs):
        x, y = batch
        return F.cross_entropy(model(x), y)

    def training_func(model, optimizers, training_step, lr_schedulers=None, max_steps=None, max_epochs=None,
                      *args, **kwargs):
        optimizer = optimizers[0] if isinstance(optimizers, (list, tuple)) else optimizers
        epochs = max_epochs or settings.epochs
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * steps_per_epoch)
        for _ in range(epochs):
            model.train()
            order = torch.randperm(len(images), generator=generator)
            total = 0.0
            for start in range(0, len(images), settings.batch_size):
                index = order[start : start + settings.batch_size]
                if len(index) < 2:
                    continue
                optimizer.zero_grad(set_to_none=True)
                loss = training_step((images[index], labels[index]), model)
                loss.backward()
                optimizer.step()
                schedule.step()
                total += loss.item() * len(index)
            losses.append(total / len(images))

    optimizer = nni.trace(torch.optim.SGD)(model.parameters(), lr=settings.lr, momentum=settings.momentum,
                                           weight_decay=settings.weight_decay, nesterov=True)
    evaluator = TorchEvaluator(training_func, optimizer, training_step)
    quantizer = QATQuantizer(model, qat_config(layers), evaluator)
    quantizer.compress(None, settings.epochs)
    quantizer.unwrap_model()
    model.eval()
    return losses
