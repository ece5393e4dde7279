import os
import pickle
import shlex
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from edgetune.objectives.baseline import CheckpointError, get_baseline, load_checkpoint
from edgetune.objectives.finetune import TrainSettings
from edgetune.objectives.models import create_model


class _Exploit:
    """Unpickling it runs a shell command that creates ``marker``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


TINY_NET = """
from torch import nn


def build(num_classes=10):
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, num_classes))
"""


def test_baseline_is_trained_once_then_cached(digits, tmp_path):
    (tmp_path / "tinynet.py").write_text(TINY_NET)  # the cache is under test, not training: a second of it
    model = f"{tmp_path}/tinynet.py:build"
    settings = TrainSettings(epochs=1, lr=0.05, seed=1)
    first, source = get_baseline(model, digits, {"name": "digits"}, settings)
    assert source == "trained"
    second, source = get_baseline(model, digits, {"name": "digits"}, settings)
    assert source == "cache"
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)
    _, source = get_baseline(model, digits, {"name": "digits"}, TrainSettings(epochs=1, lr=0.05, seed=2))
    assert source == "trained"  # other settings, other key
    (tmp_path / "tinynet.py").write_text(TINY_NET.replace("8, 3, stride=4", "8, 5, stride=4"))
    _, source = get_baseline(model, digits, {"name": "digits"}, settings)
    assert source == "trained"  # the model's file changed: its own key


def test_workers_starting_together_train_the_baseline_once(digits, tmp_path):
    (tmp_path / "tinynet.py").write_text(TINY_NET)
    model = f"{tmp_path}/tinynet.py:build"
    settings = TrainSettings(epochs=2, lr=0.05, seed=3)
    with ThreadPoolExecutor(2) as pool:  # two workers of one study on a fresh cache
        runs = list(pool.map(lambda _: get_baseline(model, digits, {"name": "digits"}, settings), range(2)))
    assert sorted(source for _, source in runs) == ["cache", "trained"]  # the second waited for the first's checkpoint
    for a, b in zip(runs[0][0].state_dict().values(), runs[1][0].state_dict().values()):
        assert torch.equal(a, b)


def test_checkpoint_is_loaded_as_weights_only(tmp_path, digits):
    model = create_model("resnet20", 10)
    path = tmp_path / "weights.pt"
    torch.save({"state_dict": model.state_dict()}, path)
    loaded, source = get_baseline("resnet20", digits, {}, TrainSettings(1, 0.1), checkpoint=str(path))
    assert source == "checkpoint"
    assert torch.equal(loaded.fc.weight, model.fc.weight)


def test_a_pickle_that_runs_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    marker = tmp_path / "pwned"
    with open(path, "wb") as handle:
        pickle.dump({"state_dict": _Exploit(marker)}, handle)
    with pytest.raises(CheckpointError, match="cannot be loaded safely"):
        load_checkpoint(create_model("resnet20", 10), path)
    assert not marker.exists()


def test_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(create_model("resnet20", 10), tmp_path / "none.pt")
    path = tmp_path / "other.pt"
    torch.save(create_model("resnet32", 10).state_dict(), path)
    with pytest.raises(CheckpointError, match=r"does not fit the model: unexpected layer1\.3\.conv1\.weight, "
                                              r"layer1\.3\.bn1\.weight, layer1\.3\.bn1\.bias and \d+ more$"):
        load_checkpoint(create_model("resnet20", 10), path)


def test_a_checkpoint_for_other_classes_says_so_in_one_line(tmp_path):
    path = tmp_path / "imagenet-shaped.pt"
    torch.save(create_model("resnet18", 1000).state_dict(), path)
    with pytest.raises(CheckpointError) as refused:
        load_checkpoint(create_model("resnet18", 10), path)
    assert str(refused.value) == (f"checkpoint {path} does not fit the model: fc.weight is 1000×512 in the checkpoint, "
                                  "10×512 in the model (the checkpoint classifies 1000 classes, the data has 10); "
                                  "1 more tensor of another shape")
