"""Accuracy from logits, and a plain PyTorch evaluation used during fine-tuning."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .accelerator import CPU, Accelerator
from .data import Samples, as_samples


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    """Top-k accuracy in percent."""
    k = min(k, logits.shape[1])
    top = np.argsort(-logits, axis=1)[:, :k]
    return float((top == labels[:, None]).any(axis=1).mean() * 100.0)


@torch.no_grad()
def torch_logits(model: nn.Module, images: torch.Tensor | Samples, batch_size: int = 256, on: Accelerator = CPU) -> np.ndarray:
    """f32 logits of every image (a tensor or a split, in its order), computed on ``on``'s device (where
    the model is)."""
    model.eval()
    with on.repeatable():
        return torch.cat([model(x) for x, _, _ in as_samples(images).batches(None, batch_size, on)]).float().cpu().numpy()


def collapsed(top1: float, num_classes: int, margin: float = 1.5) -> bool:
    """Near chance level: the network has stopped telling classes apart."""
    return top1 <= margin * 100.0 / num_classes


def per_class_accuracy(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> list[float]:
    """Accuracy within each true class (the class's recall), in percent; NaN for an absent class."""
    result = []
    for c in range(num_classes):
        members = labels == c
        result.append(float((predictions[members] == c).mean() * 100.0) if members.any() else float("nan"))
    return result
