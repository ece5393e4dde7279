"""Where PyTorch trains (spec [train]): the device and autocast choice, and that model, batches and
teacher go there. Each plumbing test runs on the CPU and, on a host with CUDA, on the GPU too."""
import copy
import os

import pytest
import torch
from torch import nn

from edgetune.objectives import accelerator
from edgetune.objectives.accelerator import CPU, Accelerator, AcceleratorError, resolve, worker_devices
from edgetune.objectives.finetune import TrainSettings, logits_of, train

HAS_CUDA = torch.cuda.is_available()
# the plumbing tests' devices: this host's CPU, and its first GPU where there is one
HERE = ["cpu"] + [pytest.param("cuda", marks=pytest.mark.gpu)] * HAS_CUDA


@pytest.fixture(autouse=True)
def _cublas_setting(monkeypatch):
    """resolve() fixes cuBLAS's workspace for repeatable CUDA training: put the variable back after each test."""
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)


@pytest.mark.skipif(HAS_CUDA, reason="a GPU is present")
def test_auto_trains_on_the_cpu_without_a_gpu_and_autocast_is_off():
    assert resolve() == CPU == resolve("auto", "auto") == resolve("cpu", "off")
    assert resolve().amp is None and resolve().name == "cpu"
    with pytest.raises(AcceleratorError, match=r"^spec key 'train.device': 'cuda' is not available on this host "
                                               r"\(it has no CUDA GPU\); use \"auto\" or \"cpu\"$"):
        resolve("cuda")


def test_the_choice_on_a_host_with_gpus():
    # the host's GPU count given: which device each spelling means (amp off: no GPU asked about its bf16)
    assert resolve("auto", "off", gpus=2).device == torch.device("cuda", 0)
    assert resolve("cuda", "off", gpus=2).name == "cuda:0"
    assert resolve("cuda:1", "off", gpus=2).name == "cuda:1"
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    with pytest.raises(AcceleratorError, match=r"'cuda:2' is not available on this host \(its GPUs are cuda:0..cuda:1\)"):
        resolve("cuda:2", "off", gpus=2)
    assert resolve("cpu", "auto", gpus=2) == CPU  # asked for the CPU: the CPU


def test_cuda_training_holds_cudnn_repeatable_and_gives_its_settings_back(monkeypatch):
    cudnn = torch.backends.cudnn
    monkeypatch.setattr(cudnn, "benchmark", True)  # as the CUDA target device leaves it
    monkeypatch.setattr(cudnn, "deterministic", False)
    with Accelerator(torch.device("cuda", 0)).repeatable():
        assert not cudnn.benchmark and cudnn.deterministic
    assert cudnn.benchmark and not cudnn.deterministic
    with CPU.repeatable():
        assert cudnn.benchmark  # the CPU does not touch cuDNN


def test_amp_on_the_cpu_is_off_unless_bf16_is_asked_for():
    assert resolve("cpu", "auto").amp is None and resolve("cpu", "off").amp is None
    assert resolve("cpu", "bf16").amp == "bf16"
    with pytest.raises(AcceleratorError, match=r'^spec key \'train.amp\': "f16" trains on a GPU only'):
        resolve("cpu", "f16")
    with pytest.raises(AcceleratorError, match=r"^spec key 'train.device': must be one of: auto, cpu, cuda, cuda:N, "
                                               r"got 'gpu'$"):
        resolve("gpu")


def test_local_workers_get_gpus_round_robin():
    assert worker_devices("auto", 5, 2) == ["cuda:0", "cuda:1", "cuda:0", "cuda:1", "cuda:0"]
    assert worker_devices("cuda", 3, 4) == ["cuda:0", "cuda:1", "cuda:2"]
    assert worker_devices("auto", 2, 1) == [None, None]  # one GPU: both share it, as "auto" says
    assert worker_devices("auto", 2, 0) == [None, None]  # no GPU: the CPU
    assert worker_devices("cuda:1", 3, 4) == [None] * 3  # a GPU named: every worker on it
    assert worker_devices("cpu", 2, 4) == [None, None]


def _data(n=96, device="cpu"):
    torch.manual_seed(0)
    return torch.randn(n, 3, 8, 8).to(device), torch.randint(0, 4, (n,)).to(device)


def _model():
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 4))


class Seen:
    """What the model's forward passes were given: the device of their input and weights, and autocast."""

    def __init__(self, model: nn.Module, device_type: str):
        self.inputs, self.weights, self.autocast = set(), set(), set()
        model.register_forward_pre_hook(self.hook)
        self.model, self.device_type = model, device_type

    def hook(self, module, args):
        self.inputs.add(args[0].device.type)
        self.weights.add(next(module.parameters()).device.type)
        enabled = torch.is_autocast_enabled(self.device_type)
        self.autocast.add(torch.get_autocast_dtype(self.device_type) if enabled else None)


@pytest.mark.parametrize("device", HERE)
def test_the_model_its_batches_and_the_teacher_are_on_the_training_device(device):
    on = resolve(device, "auto")
    images, labels = _data()  # held on the CPU: train() places them
    teacher_logits = logits_of(copy.deepcopy(_model()).to(on.device), images, on=on)
    assert teacher_logits.device.type == device
    model = _model()
    seen = Seen(model, device)
    losses = train(model, images, labels, TrainSettings(4, 0.1, batch_size=32, distill=0.5), teacher_logits=teacher_logits,
                   on=on)
    assert seen.inputs == seen.weights == {device}
    assert next(model.parameters()).device.type == device  # left there: the caller moves it back
    assert seen.autocast == ({None} if device == "cpu" else {torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16})
    assert losses[-1] < losses[0]


def test_bf16_asked_for_on_the_cpu_autocasts_and_still_learns():
    on = resolve("cpu", "bf16")
    images, labels = _data()
    model = _model()
    seen = Seen(model, "cpu")
    losses = train(model, images, labels, TrainSettings(4, 0.1, batch_size=32), on=on)
    assert seen.autocast == {torch.bfloat16} and losses[-1] < losses[0]
    assert next(model.parameters()).dtype == torch.float32  # autocast: the weights stay f32


@pytest.mark.parametrize("device", HERE)
def test_the_same_seed_gives_the_same_weights_on_one_device(device):
    on = resolve(device, "auto")
    images, labels = _data()
    trained = []
    for _ in range(2):
        model = _model()
        torch.manual_seed(3)
        train(model, images, labels, TrainSettings(2, 0.1, batch_size=32, seed=5), on=on)
        trained.append(torch.cat([p.detach().cpu().flatten() for p in model.parameters()]))
    assert torch.equal(trained[0], trained[1])


@pytest.mark.gpu  # the CPU half runs everywhere; -m gpu selects it on a GPU host
def test_data_that_fits_goes_to_the_gpu_and_the_rest_stays_pinned(monkeypatch):
    if not HAS_CUDA:
        assert CPU.place(_data()[0]).device.type == "cpu"  # the CPU: unchanged, not pinned
        images = _data()[0]
        assert CPU.batch(images, torch.tensor([3, 1])).equal(images[[3, 1]])
        return
    on = resolve("cuda", "off")
    images = _data()[0]
    assert on.place(images).device.type == "cuda"
    monkeypatch.setattr(accelerator, "GPU_DATA_SHARE", 0.0)
    held = on.place(images)
    assert held.device.type == "cpu" and held.is_pinned()
    assert on.batch(held, torch.tensor([3, 1], device="cuda")).equal(images[[3, 1]].cuda())


def test_the_baseline_cache_key_names_the_device_kind_only_off_the_cpu(digits):
    from edgetune.objectives.baseline import cache_key

    settings = TrainSettings(1, 0.1)
    key = lambda on: cache_key("resnet20", digits, {"data.name": "digits"}, settings, on)  # noqa: E731
    # a CPU-trained baseline keeps the key it had before [train] existed: caches stay valid
    assert key(CPU) == cache_key("resnet20", digits, {"data.name": "digits"}, settings)
    gpu0, gpu1 = Accelerator(torch.device("cuda", 0), "bf16"), Accelerator(torch.device("cuda", 1), "bf16")
    assert key(gpu0) == key(gpu1)  # two GPUs of one host train the same model
    assert len({key(CPU), key(gpu0), key(Accelerator(torch.device("cuda", 0))), key(Accelerator(torch.device("cpu"), "bf16"))}) == 4


@pytest.mark.slow
@pytest.mark.parametrize("device", HERE)
def test_qat_trains_on_the_device_and_hands_back_f32_scales(device):
    from edgetune.objectives.quantize import qat_finetune

    on = resolve(device, "auto")
    images, labels = _data()
    model = _model()
    seen = Seen(model, device)
    losses, scales = qat_finetune(model, ["0"], images, labels, TrainSettings(2, 0.05, batch_size=32), on=on)
    assert seen.inputs == {device} and seen.autocast == {None}  # QAT: no autocast, the ranges stay f32
    assert next(model.parameters()).device.type == device
    assert set(scales) == {"0"} and scales["0"]["weight"] > 0 and len(losses) == 2


@pytest.mark.slow
@pytest.mark.parametrize("device", HERE)
def test_a_trial_fine_tunes_on_the_device_and_deploys_from_the_cpu(digits, device):
    """The whole step: a pruned ResNet-20 fine-tunes (distilled) on the training device, comes back to the
    CPU, is deployed on the CPU device and records where it trained."""
    from edgetune.devices import create_device
    from edgetune.devices.protocol import LatencyProtocol
    from edgetune.objectives import pipeline
    from edgetune.objectives.data import DataSplits
    from edgetune.objectives.groups import derive_groups
    from edgetune.objectives.models import create_model

    small = DataSplits("digits", digits.x_train[:256], digits.y_train[:256], digits.x_val[:64], digits.y_val[:64],
                       digits.classes, digits.mean, digits.std)
    baseline = create_model("resnet20", 10).eval()
    fast = LatencyProtocol(warmup_runs=2, warmup_seconds=0.0, min_runs=5, max_seconds=0.2)
    ctx = pipeline.TrialContext(baseline, small, derive_groups(baseline), create_device("cpu", threads=1, protocol=fast),
                                collapse_margin=0.0, train_on=resolve(device, "auto"))
    assert ctx.teacher_logits.device.type == device and ctx.train_set.images.device.type == device
    settings = TrainSettings(1, 0.01, batch_size=64, distill=0.5)
    plan = pipeline.TrialPlan(finetune=settings)
    model = copy.deepcopy(baseline)
    outcome = pipeline.fine_tune_and_measure(model, ctx, plan, settings, pipeline.device_plan_for(model, ctx, plan),
                                             pipeline.PhaseClock(None))
    try:
        assert outcome.attributes["train_device"] == ("cpu" if device == "cpu" else "cuda:0")
        assert outcome.attributes["train_amp"] == ("off" if device == "cpu" else ctx.train_on.amp)
        assert next(outcome.model.parameters()).device.type == "cpu"
        assert next(baseline.parameters()).device.type == "cpu"  # the teacher was a copy
    finally:
        outcome.deployment.close()


@pytest.mark.slow
@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA GPU on this host")
def test_two_studies_training_on_one_gpu_at_once_both_complete(tmp_path):
    """Two `tune start` processes, each with its own SQLite file, fine-tuning on cuda:0 together
    (measured on the host CPU: the GPU host has no OpenVINO)."""
    import optuna

    from conftest import fresh_tiny_spec, tune_process

    runs = []
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        folder = fresh_tiny_spec(tmp_path / name)
        runs.append((folder, tune_process("start", "--spec", str(folder / "tiny.toml"), "--device", "cpu",
                                          "--set", "train.device=cuda:0", "--set", "search.recipes=false",
                                          cwd=folder, env=dict(os.environ))))
    for folder, process in runs:
        output, _ = process.communicate(timeout=600)
        assert process.returncode == 0, output
        study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{folder}/tiny.db")
        complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        assert len(complete) == 3 and {t.user_attrs["train_device"] for t in complete} == {"cuda:0"}
