"""Energy per inference (``energy_mj``, target ``energy``) and the runtime a deployment records.

The counters themselves (NVML, RAPL) are hardware: tests/test_cuda.py measures NVML on a GPU host;
here the RAPL reader is checked against files laid out as Linux's powercap framework lays them out,
and the refusal runs for real where this host has no counter (these VMs have none).
"""
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from edgetune.devices import PrecisionPlan, create_device
from edgetune.devices.cuda import build_runtime
from edgetune.devices.energy import RaplCounter, host_cpu_counter
from edgetune.searcher.cli import app
from edgetune.searcher.space import check_targets
from edgetune.searcher.spec import SpecError, load_spec, target_direction, target_unit

no_counter = pytest.mark.skipif(host_cpu_counter() is not None, reason="this host's CPU has a readable RAPL counter")


def _domain(root, name, index, energy_uj, max_uj):
    folder = root / f"intel-rapl:{index}"
    folder.mkdir(parents=True)
    (folder / "name").write_text(f"{name}\n")
    (folder / "energy_uj").write_text(f"{energy_uj}\n")
    (folder / "max_energy_range_uj").write_text(f"{max_uj}\n")
    sub = root / f"intel-rapl:{index}:0"  # a sub-domain (core, dram) is inside the package: not counted again
    sub.mkdir()
    (sub / "energy_uj").write_text("5\n")
    return folder


def test_rapl_sums_the_package_domains_and_survives_a_wrap_around(tmp_path):
    first = _domain(tmp_path, "package-0", 0, energy_uj=999_000, max_uj=999_999)
    second = _domain(tmp_path, "package-1", 1, energy_uj=10_000, max_uj=10**9)
    counter = RaplCounter.find(tmp_path)
    assert counter.name == "rapl:package-0+package-1" and counter.millijoules() == 0
    (first / "energy_uj").write_text("1000\n")  # wrapped: 999,000 -> 999,999 -> 0 -> 1,000 is 2,000 uJ
    (second / "energy_uj").write_text("13000\n")
    assert counter.millijoules() == pytest.approx(2.0 + 3.0)


def test_no_rapl_domains_or_unreadable_ones_mean_no_counter(tmp_path):
    assert RaplCounter.find(tmp_path / "nowhere") is None
    assert RaplCounter.find(tmp_path) is None
    folder = tmp_path / "intel-rapl:0"
    folder.mkdir()
    (folder / "energy_uj").write_text("not a number\n")
    (folder / "max_energy_range_uj").write_text("100\n")
    assert RaplCounter.find(tmp_path) is None


def test_the_spec_accepts_energy_as_a_target():
    spec = load_spec(overrides={"study.targets": ["latency", "energy", "top1"]})
    assert spec.targets == ["latency", "energy", "top1"]
    assert target_unit("energy") == "energy_mj" and target_direction("energy") == "minimize"


@no_counter
def test_energy_on_a_device_without_a_counter_is_refused():
    device = create_device("openvino:CPU").info()
    assert not device.measures_energy
    with pytest.raises(SpecError, match="target 'energy': openvino:CPU has no energy counter on this host"):
        check_targets(load_spec(overrides={"study.targets": ["latency", "energy", "top1"]}), device)
    with pytest.raises(SpecError, match="spec key 'device.energy': cpu has no energy counter"):
        check_targets(load_spec(overrides={"device.energy": True}), create_device("cpu").info())


@no_counter
def test_tune_start_with_an_energy_target_here_is_one_line_before_any_work(tmp_path):
    result = CliRunner().invoke(app, ["start", "--target", "latency,energy,top1", "--storage",
                                      f"sqlite:///{tmp_path}/e.db", "--set", f"study.artifacts={tmp_path}/a"])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith("error: target 'energy': openvino:CPU has no energy counter on this host"), lines[0]
    assert "remove it from --target" in lines[0]


class Branchy(nn.Module):
    """Control flow on a tensor's value: tracing cannot follow it."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return {"logits": self.fc(x)} if x.sum() > 0 else self.fc(-x)


def test_a_model_tracing_cannot_follow_runs_eager_and_says_why():
    model = Branchy().eval()
    run, program, runtime, why = build_runtime(model, torch.ones(1, 4))
    assert runtime == "eager" and program is model and why.startswith("tracing failed: ")


def test_without_cuda_the_frozen_program_runs_and_the_record_says_no_graph():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    model(torch.rand(1, 3, 8, 8))
    model.eval()
    run, program, runtime, why = build_runtime(model, torch.rand(1, 3, 8, 8))
    assert runtime == "torchscript" and why == "no CUDA graph on cpu"
    x = torch.rand(5, 3, 8, 8)  # the frozen program takes other batch sizes
    assert torch.allclose(run(x), model(x), atol=1e-5)


@pytest.mark.parametrize("device, runtime", [("openvino:CPU", "openvino"), ("cpu", "torchscript")])
def test_every_deployment_says_what_runs_it(device, runtime):
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 2)).eval()
    deployment = create_device(device).deploy(model, torch.rand(2, 3, 8, 8), PrecisionPlan("f32"))
    try:
        assert deployment.runtime == runtime and deployment.runtime_fallback is None
        if host_cpu_counter() is None:
            assert deployment.measure_energy() is None
    finally:
        deployment.close()
