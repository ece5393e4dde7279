"""Image folders streamed from disk (a DataLoader with workers) against the same folder in memory."""
import numpy as np
import pytest
import torch
from torch import nn

from edgetune.objectives import data as data_module
from edgetune.objectives.data import DataError, load_data
from edgetune.objectives.evaluate import topk_accuracy, torch_logits
from edgetune.objectives.finetune import TrainSettings, logits_of, train

CLASSES = ("circle", "square", "stripe")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A few dozen noisy 20x20 PNGs of three classes, each with its own colour, in train/ and val/."""
    from PIL import Image

    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for split, count in (("train", 14), ("val", 6)):
        for c, name in enumerate(CLASSES):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                image = rng.integers(0, 120, (20, 20, 3))
                image[..., c] += 120
                Image.fromarray(image.astype(np.uint8)).save(root / split / name / f"{i}.png")
    return root


def _model():
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(6, 3))


def test_a_streamed_folder_is_the_same_data_as_in_memory(folder):
    held = load_data("imagefolder", str(folder), image_size=16)
    streamed = load_data("imagefolder", str(folder), image_size=16, in_memory=False, workers=0)
    assert not held.streamed and streamed.streamed
    assert streamed.classes == held.classes == list(CLASSES)
    assert streamed.image_shape == held.image_shape == (3, 16, 16) and streamed.num_classes == 3
    assert torch.equal(streamed.y_val, held.y_val) and torch.equal(streamed.train.labels, held.y_train)
    assert np.allclose(streamed.mean, held.mean, atol=1e-6) and np.allclose(streamed.std, held.std, atol=1e-6)
    assert torch.allclose(streamed.example_input(2), held.example_input(2), atol=1e-5)
    assert torch.allclose(streamed.calibration_subset(10, seed=3), held.calibration_subset(10, seed=3), atol=1e-5)
    assert np.allclose(np.concatenate(list(streamed.val_arrays(batch_size=5))), held.x_val.numpy(), atol=1e-5)


def test_evaluation_through_the_loader_equals_evaluation_in_memory(folder):
    held = load_data("imagefolder", str(folder), image_size=16)
    streamed = load_data("imagefolder", str(folder), image_size=16, in_memory=False, workers=2)
    model = _model()
    train(model, held.x_train, held.y_train, TrainSettings(3, 0.1, batch_size=8))
    labels = held.y_val.numpy()
    in_memory = torch_logits(model, held.x_val, batch_size=7)
    from_disk = torch_logits(model, streamed.val, batch_size=7)
    assert np.allclose(in_memory, from_disk, atol=1e-4)
    assert topk_accuracy(from_disk, labels) == topk_accuracy(in_memory, labels) > 100 / 3  # it learned something


def test_a_seed_fine_tunes_on_the_same_batches_streamed_with_two_workers(folder):
    """Same seed, same batches in the same order: the losses match the in-memory run's (the inputs differ
    only by the rounding of the normalisation), the teacher's logits are looked up by index."""
    held = load_data("imagefolder", str(folder), image_size=16)
    streamed = load_data("imagefolder", str(folder), image_size=16, in_memory=False, workers=2)
    teacher = _model()
    teachers = logits_of(teacher, held.x_train), logits_of(teacher, streamed.train)
    assert torch.allclose(*teachers, atol=1e-4)
    settings = TrainSettings(3, 0.05, batch_size=8, seed=7, distill=0.5)
    losses = []
    for split, teacher_logits in ((held.train, teachers[0]), (streamed.train, teachers[1])):
        model = _model()
        torch.manual_seed(2)
        losses.append(train(model, split, None, settings, teacher_logits=teacher_logits))
    assert losses[1] == pytest.approx(losses[0], rel=1e-4) and losses[1][-1] < losses[1][0]


def test_auto_streams_what_would_not_fit(folder, monkeypatch):
    assert not load_data("imagefolder", str(folder), image_size=16).streamed  # a few kB: in memory
    monkeypatch.setattr(data_module, "IN_MEMORY_BYTES", 1000)
    assert load_data("imagefolder", str(folder), image_size=16, workers=0).streamed
    assert not load_data("imagefolder", str(folder), image_size=16, in_memory=True).streamed
    assert not load_data("digits", in_memory=False).streamed  # the built-in sets are always in memory


def test_bad_folders_stay_one_line_when_streamed(tmp_path):
    with pytest.raises(DataError, match=r"nowhere has no train/ or val/ folder"):
        load_data("imagefolder", str(tmp_path / "nowhere"), in_memory=False)
    for split in ("train", "val"):
        (tmp_path / "empty" / split / "cat").mkdir(parents=True)
    with pytest.raises(DataError, match=r"empty/train: Found no valid file for the classes cat"):
        load_data("imagefolder", str(tmp_path / "empty"), in_memory=False)

    from PIL import Image

    for split in ("train", "val"):
        (tmp_path / "corrupt" / split / "cat").mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "corrupt" / split / "cat" / "ok.png")
    (tmp_path / "corrupt" / "train" / "cat" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(DataError) as raised:  # decoded in a worker process, reported as the worker said it
        load_data("imagefolder", str(tmp_path / "corrupt"), in_memory=False, workers=2)
    assert str(raised.value) == (f"image {tmp_path}/corrupt/train/cat/broken.jpg cannot be read: "
                                 "not an image file Pillow can read")


def _context(data):
    from edgetune.devices import create_device
    from edgetune.devices.protocol import LatencyProtocol
    from edgetune.objectives import pipeline
    from edgetune.objectives.groups import derive_groups
    from edgetune.objectives.models import create_model

    torch.manual_seed(0)
    baseline = create_model("resnet20", 3).eval()
    train(baseline, data.train, None, TrainSettings(2, 0.05, batch_size=16))
    baseline.eval()
    fast = LatencyProtocol(warmup_runs=2, warmup_seconds=0.0, min_runs=5, max_seconds=0.2)
    return pipeline.TrialContext(baseline, data, derive_groups(baseline), create_device("cpu", threads=1, protocol=fast),
                                 collapse_margin=0.0, calibration_size=8)


@pytest.mark.slow
def test_a_trial_runs_on_a_streamed_folder_and_evaluates_as_in_memory(folder):
    """The pipeline's steps on a streamed folder: the deployed baseline's Top-1 equals the in-memory one's,
    and a pruned, distilled, int8 trial fine-tunes through the loader's two workers."""
    from edgetune.objectives import pipeline

    held = load_data("imagefolder", str(folder), image_size=16)
    streamed = load_data("imagefolder", str(folder), image_size=16, in_memory=False, workers=2)
    ctx = _context(streamed)
    same = pipeline.TrialContext(ctx.baseline, held, ctx.groups, ctx.device)
    top1 = [pipeline.deploy_and_measure(ctx.baseline, c).attributes["top1"] for c in (ctx, same)]
    assert top1[0] == top1[1]
    plan = pipeline.TrialPlan(inner={ctx.groups[0].name: 8}, int8_groups=frozenset({ctx.groups[-1].name}),
                              finetune=TrainSettings(1, 0.01, batch_size=16, distill=0.5))
    outcome = pipeline.run_trial(ctx, plan)
    assert outcome.attributes["fine_tune_epochs"] == 1 and outcome.attributes["calibration_size"] == 8  # from the folder
    assert len(outcome.predictions) == len(streamed.val)


def test_the_statistics_pass_is_kept_per_listing_of_the_files(tmp_path):
    """Every worker of a study loads the folder: the mean and deviation are computed once per listing."""
    import shutil

    from PIL import Image

    from edgetune.objectives.cache import cache_dir

    for split in ("train", "val"):
        (tmp_path / split / "cat").mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(tmp_path / split / "cat" / f"{i}.png")
    kept = lambda: set((cache_dir() / "data-statistics").glob("*.json"))  # noqa: E731
    before = kept()
    first = load_data("imagefolder", str(tmp_path), image_size=8, in_memory=False, workers=0)
    assert len(kept() - before) == 1
    again = load_data("imagefolder", str(tmp_path), image_size=8, in_memory=False, workers=0)
    assert again.mean == first.mean and len(kept() - before) == 1
    shutil.copy(tmp_path / "train" / "cat" / "2.png", tmp_path / "train" / "cat" / "3.png")  # another listing
    changed = load_data("imagefolder", str(tmp_path), image_size=8, in_memory=False, workers=0)
    assert len(kept() - before) == 2 and changed.mean[0] > first.mean[0]
    held = load_data("imagefolder", str(tmp_path), image_size=8)
    assert np.allclose(changed.mean, held.mean, atol=1e-6) and np.allclose(changed.std, held.std, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this host")
def test_a_streamed_folder_feeds_the_gpu_from_pinned_memory(folder):
    from edgetune.objectives.accelerator import resolve

    on = resolve("cuda", "off")
    streamed = load_data("imagefolder", str(folder), image_size=16, in_memory=False, workers=2)
    placed = streamed.train.placed(on)
    images, labels, index = next(placed.batches(torch.arange(len(placed)), 8, on))
    assert images.device.type == labels.device.type == index.device.type == "cuda"
    assert placed._loader(8)[1].pin_memory
    model = _model()
    losses = train(model, placed, None, TrainSettings(3, 0.05, batch_size=8), on=on)
    assert next(model.parameters()).device.type == "cuda" and losses[-1] < losses[0]
