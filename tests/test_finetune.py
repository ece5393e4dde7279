"""The training loop: cross-entropy, and distillation from the baseline's logits."""
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from edgetune.objectives.finetune import TrainSettings, batch_loss, logits_of, train


def _data(n=64):
    torch.manual_seed(0)
    images = torch.randn(n, 3, 8, 8)
    labels = torch.randint(0, 4, (n,))
    return images, labels


def _model():
    torch.manual_seed(1)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))


def test_distillation_mixes_the_teacher_into_the_loss():
    images, labels = _data()
    model = _model()
    index = torch.arange(16)
    plain = batch_loss(model, images[index], labels[index], index, TrainSettings(1, 0.1))
    assert plain.item() == pytest.approx(F.cross_entropy(model(images[index]), labels[index]).item())
    # a teacher that agrees with the student adds no distillation loss: only (1 - w) x CE is left
    same = logits_of(model, images)
    mixed = batch_loss(model, images[index], labels[index], index, TrainSettings(1, 0.1, distill=0.9), same)
    assert mixed.item() == pytest.approx(0.1 * plain.item(), rel=1e-4)


def test_a_distilled_student_moves_towards_its_teacher():
    images, labels = _data()
    torch.manual_seed(2)
    teacher = logits_of(nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4)), images)

    def gap(model):
        with torch.no_grad():
            return F.kl_div(F.log_softmax(model(images), 1), F.softmax(teacher, 1), reduction="batchmean").item()

    plain, distilled = _model(), _model()
    train(plain, images, labels, TrainSettings(5, 0.1, batch_size=16))
    train(distilled, images, labels, TrainSettings(5, 0.1, batch_size=16, distill=0.9, temperature=1.0), teacher_logits=teacher)
    assert gap(distilled) < gap(plain)
