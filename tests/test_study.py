"""A whole study end to end: real NNI, OpenVINO, Optuna and SQLite, on ResNet-20 and digits."""

import optuna
import pytest
from typer.testing import CliRunner

from edgetune.devices.host import channel_block
from edgetune.objectives.trial_record import ALWAYS, PHASES, unknown_keys
from edgetune.searcher import record
from edgetune.searcher.cli import app


from conftest import copy_of_study, fresh_tiny_spec
from conftest import start_tiny as _start


@pytest.mark.slow
def test_a_study_of_three_trials_end_to_end(study_dir):
    output = _start(study_dir)
    assert "Pareto front of 'tiny'" in output and "base" in output
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{study_dir}/tiny.db")
    assert study.metric_names == ["latency_ms", "top1"]
    assert [d.name for d in study.directions] == ["MINIMIZE", "MAXIMIZE"]
    attrs = study.user_attrs
    assert attrs["spec"]["model.name"] == "resnet20"
    assert [g["name"] for g in attrs["groups"]] == ["layer1", "layer2", "layer3"]
    for key in ["latency_ms", "latency_ci95_rel", "top1", "params", "flops", "size_bytes", "device"]:
        assert f"baseline_{key}" in attrs
    assert attrs["baseline_device"]["inference_precision"] == "f32"
    # the baseline's record: the trial's names, without the study's own baseline_source (same prefix)
    assert not unknown_keys(record.baseline(study)), unknown_keys(record.baseline(study))
    assert record.baseline_source(study) == attrs["baseline_source"] and "source" not in record.baseline(study)
    trials = study.get_trials()
    assert len(trials) == 3 and all(t.state.is_finished() for t in trials)
    assert attrs["recipes"] == ["int8"] and trials[0].user_attrs["seeded"] == "int8"  # a quarter of 3: one recipe
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert complete, [t.user_attrs.get("failure") for t in trials]
    for trial in trials:  # every key is in the contract (objectives/trial_record.py)
        assert not unknown_keys(trial.user_attrs), unknown_keys(trial.user_attrs)
    for trial in complete:
        assert not ALWAYS - set(trial.user_attrs), ALWAYS - set(trial.user_attrs)
        a = trial.user_attrs
        assert trial.values == [a["latency_ms"], a["top1"]]
        assert set(a["seconds"]) == set(PHASES) - {"screen", "energy"}  # no latency limit, no energy
        assert a["device"]["name"] == "openvino:CPU" and a["device"]["runtime"].startswith("openvino")
        assert a["runtime"] == "openvino" and a["runtime_fallback"] is None and a["energy_mj"] is None
        assert a["latency_ci95_rel"] > 0 and a["latency_runs"] >= 30
        assert (study_dir / "artifacts" / a["artifact_id"]).is_file()
        stages = {s["name"]: s for s in attrs["stages"]}
        shrunk = (any(v > 0 for v in a["sparsity_achieved"].values()) or a["blocks_removed"]
                  or any(a["stream_width"][s] < stages[s]["stream_width"] for s in stages))
        assert (a["params"] < attrs["baseline_params"]) == bool(shrunk)
        # every width is a whole multiple of the device's granularity, or the full width
        multiple = attrs["channel_multiple"]
        assert multiple == a["channel_multiple"] == channel_block()  # the OpenVINO CPU's: 8 (AVX2) or 16
        full = {"layer1": 16, "layer2": 32, "layer3": 64}
        for layer, channels in a["channels"].items():
            assert channels % multiple == 0 or channels == full[layer.split(".")[0]], (layer, channels)
        assert all(w % multiple == 0 for w in a["stream_width"].values())
        assert sum(a["depth"].values()) == 9 - len(a["blocks_removed"])
        assert set(a["precision_plan"]) == {"layer1", "layer2", "layer3", "other"}
        for group, precision in a["precision_plan"].items():  # the plan, read back from the deployed model
            assert set(a["precision_used_by_group"][group]) == {precision}, (group, a["precision_used_by_group"])
    for trial in trials:
        if trial.state != optuna.trial.TrialState.COMPLETE:
            assert trial.user_attrs["failure"]  # a failed or collapsed trial says why


@pytest.mark.slow
def test_resuming_adds_trials_without_recomputing_the_baseline(tiny_study, tmp_path, monkeypatch):
    from edgetune.searcher import study as study_module

    folder = copy_of_study(tiny_study, tmp_path)  # resuming adds a trial: not to the study other tests share

    def no_second_ranking(*args, **kwargs):
        raise AssertionError("the block ranking was computed again on resume")

    monkeypatch.setattr(study_module, "block_importance", no_second_ranking)
    before = optuna.load_study(study_name="tiny", storage=f"sqlite:///{folder}/tiny.db").user_attrs
    assert set(before["block_importance"]) == {"layer1.0", "layer1.1", "layer1.2", "layer2.1", "layer2.2",
                                               "layer3.1", "layer3.2"}
    output = _start(folder, "--trials", "4")
    assert "baseline (the study's artifact)" in output
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{folder}/tiny.db")
    assert len(study.get_trials()) == 4
    assert study.user_attrs["baseline_latency_ms"] == before["baseline_latency_ms"]  # measured once
    assert study.user_attrs["groups"] == before["groups"]
    assert study.user_attrs["block_importance"] == before["block_importance"]
    result = CliRunner().invoke(app, ["pareto", "tiny", "--storage", f"sqlite:///{folder}/tiny.db"])
    assert result.exit_code == 0 and "Pareto front of 'tiny'" in result.output


@pytest.mark.slow
def test_resume_with_another_model_is_refused(study_dir):
    result = CliRunner().invoke(app, ["start", "--spec", str(study_dir / "tiny.toml"), "--model", "resnet32"])
    assert result.exit_code == 2
    assert "study 'tiny' exists with model.name = 'resnet20', not 'resnet32'" in result.output


@pytest.mark.slow
def test_three_targets_latency_top1_size(tmp_path):
    folder = fresh_tiny_spec(tmp_path)  # its own database: the shared one holds 'tiny' alone
    output = _start(folder, "--study-name", "three", "--target", "latency,top1,size", "--trials", "2",
                    "--set", "search.fixed_precisions={layer3='int8'}", "--max-class-drop", "100", "--max-top1-drop", "100",
                    "--set", "device.throughput=true")
    assert "Pareto front of 'three'" in output
    study = optuna.load_study(study_name="three", storage=f"sqlite:///{folder}/tiny.db")
    assert study.metric_names == ["latency_ms", "top1", "size_bytes"]
    assert [d.name for d in study.directions] == ["MINIMIZE", "MAXIMIZE", "MINIMIZE"]
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert complete
    for trial in complete:
        assert trial.values[2] == trial.user_attrs["size_bytes"]
        assert trial.user_attrs["precision_plan"]["layer3"] == "int8"
        # every convolution left in layer3 (7 less the removed blocks' two each) runs in int8
        removed = sum(b.startswith("layer3.") for b in trial.user_attrs["blocks_removed"])
        assert trial.user_attrs["precision_used_by_group"]["layer3"] == {"int8": 7 - 2 * removed}
        # the default route on OpenVINO: deployed with the scales QAT learned, nothing calibrated again
        assert trial.user_attrs["quantization"] == "qat-qdq" and trial.user_attrs["calibration_size"] == 0
        assert set(trial.constraints) == {"top1_drop", "class_drop"}  # Optuna constraints, <= 0 feasible
        assert all(v <= 0 for v in trial.constraints.values())
        assert trial.user_attrs["throughput_fps"] > 0


@pytest.mark.slow
def test_a_second_device_is_its_own_objective(tmp_path):
    folder = fresh_tiny_spec(tmp_path)  # its own database: the shared one holds 'tiny' alone
    output = _start(folder, "--study-name", "two-devices", "--trials", "2", "--set", 'device.also=["cpu"]',
                    "--target", "latency,latency@cpu,top1", "--set", "device.threads=0")
    assert "ms@cpu" in output  # the front shows the second device's latency
    study = optuna.load_study(study_name="two-devices", storage=f"sqlite:///{folder}/tiny.db")
    assert study.metric_names == ["latency_ms", "latency_ms@cpu", "top1"]
    assert study.user_attrs["baseline_latency_ms@cpu"] > 0
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert complete
    assert not unknown_keys(record.baseline(study)), unknown_keys(record.baseline(study))
    for trial in complete:  # the same model, timed on both devices
        assert not unknown_keys(trial.user_attrs), unknown_keys(trial.user_attrs)
        assert trial.values[1] == trial.user_attrs["latency_ms@cpu"] > 0
        assert trial.values[0] == trial.user_attrs["latency_ms"] > 0
        assert trial.user_attrs["inference_precision@cpu"] in ("f32", "int8")
    # threads left open: OpenVINO's models run at the fastest count, the baseline's timed at each count up to the
    # one OpenVINO's latency hint picks on this host (its physical cores: not os.cpu_count() where cores are shared)
    by_threads = study.user_attrs.get("baseline_latency_by_threads") or {}
    assert bool(by_threads) == (_openvino_latency_threads() > 1) and ("1" in by_threads or not by_threads)
    if by_threads:
        assert study.user_attrs["baseline_latency_ms"] == min(ms for ms, _ in by_threads.values())
        for trial in complete:
            assert str(trial.user_attrs["device"]["threads_used"]) in by_threads


def _openvino_latency_threads() -> int:
    import torch

    from edgetune.devices import create_device
    from edgetune.objectives.models import create_model

    deployment = create_device("openvino:CPU").deploy(create_model("resnet20", 10).eval(), torch.rand(2, 3, 32, 32))
    try:
        return deployment.threads  # before any timing: the runtime's own choice
    finally:
        deployment.close()


@pytest.mark.slow
def test_a_latency_limit_screens_trials_before_fine_tuning(tmp_path):
    folder = fresh_tiny_spec(tmp_path)  # its own database: the shared one holds 'tiny' alone
    _start(folder, "--study-name", "too-slow", "--trials", "2", "--max-latency", "0.0001")
    study = optuna.load_study(study_name="too-slow", storage=f"sqlite:///{folder}/tiny.db")
    for trial in study.trials:  # nothing meets 0.1 µs: every trial stops after its first timing
        assert trial.state == optuna.trial.TrialState.PRUNED and not unknown_keys(trial.user_attrs)
        assert trial.user_attrs["finetune_skipped"] == "latency"
        assert trial.user_attrs["latency_untrained_ms"] > trial.user_attrs["latency_limit_ms"] == 0.0001
        assert "fine_tune" not in trial.user_attrs["seconds"] and "screen" in trial.user_attrs["seconds"]
    _start(folder, "--study-name", "fast-enough", "--trials", "1", "--max-latency", "1000")
    study = optuna.load_study(study_name="fast-enough", storage=f"sqlite:///{folder}/tiny.db")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert complete
    for trial in complete:  # both timings recorded: before fine-tuning, and of the deployed model
        assert trial.user_attrs["latency_untrained_ms"] > 0 and trial.user_attrs["latency_ms"] > 0
        assert set(trial.constraints) == {"latency"} and trial.constraints["latency"] < 0  # feasible
