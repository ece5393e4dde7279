"""Quantization-aware fine-tuning with NNI's ``QATQuantizer``.

NNI simulates int8 (fake quantization of weights and inputs) on the layers of the int8 groups
while the pruned model is fine-tuned, so their weights become robust to int8. NNI produces no
faster model by itself: the real int8 model comes from the device adapter, either calibrated again
(NNCF for OpenVINO) or with the scales QAT learned (:mod:`objectives.qdq`).
"""
from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from .accelerator import CPU, Accelerator
from .data import Samples, as_samples
from .finetune import TrainSettings, batch_loss, run_epochs, sgd
from .qdq import learned_scales


def qat_config(layers: list[str]) -> list[dict]:
    return [{"op_names": list(layers), "target_names": ["_input_", "weight"], "quant_dtype": "int8",
             "quant_scheme": "symmetric", "granularity": "default"}]


def qat_finetune(model: nn.Module, layers: list[str], images: torch.Tensor | Samples, labels: torch.Tensor | None,
                 settings: TrainSettings, teacher_logits: torch.Tensor | None = None, on: Accelerator = CPU
                 ) -> tuple[list[float], dict[str, dict[str, float]]]:
    """Fine-tune ``model`` in place with NNI QAT on ``layers``, on ``on``'s device (the model is left
    there) but without autocast: the observed ranges and int8 scales stay f32, as the device's int8
    will use them. ``images``: a tensor with its ``labels``, or a split (:class:`Samples`, labels None).
    Returns the loss of each epoch and the int8 scales it trained with
    (:func:`objectives.qdq.learned_scales`; empty when nothing trained).

    NNI's quantizer keeps its ranges and scales on the device of the tensors it observes (those of
    the wrapped layers), and hands its calibration back on the CPU."""
    import nni
    from nni.compression.quantization import QATQuantizer
    from nni.compression.utils import TorchEvaluator

    if settings.epochs <= 0 or not layers:
        return [], {}
    losses: list[float] = []
    on = Accelerator(on.device)  # f32: no autocast
    model.to(on.device)  # before the optimizer and NNI's wrappers
    samples = as_samples(images, labels).placed(on)
    teacher_logits = None if teacher_logits is None else on.place(teacher_logits)

    def training_step(batch, model, *args, **kwargs):
        return batch_loss(model, *batch, settings, teacher_logits, on)

    def training_func(model, optimizers, training_step, lr_schedulers=None, max_steps=None, max_epochs=None,
                      *args, **kwargs):
        optimizer = optimizers[0] if isinstance(optimizers, (list, tuple)) else optimizers
        epochs = replace(settings, epochs=max_epochs or settings.epochs)
        # NNI wraps the model and the step; the batch is (images, labels, index) from the split
        losses.extend(run_epochs(model, optimizer, samples, epochs, lambda *batch: training_step(batch, model), on=on))

    optimizer = sgd(model.parameters(), settings, nni.trace(torch.optim.SGD))
    evaluator = TorchEvaluator(training_func, optimizer, training_step)
    quantizer = QATQuantizer(model, qat_config(layers), evaluator)
    _, calibration = quantizer.compress(None, settings.epochs)
    quantizer.unwrap_model()
    model.eval()
    return losses, learned_scales(calibration)
