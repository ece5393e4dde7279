"""`tune export`: files, manifest, checksums, and a round trip outside edgetune."""
import json

import numpy as np
import optuna
import pytest
from typer.testing import CliRunner

from edgetune.searcher.cli import app
from edgetune.searcher.export import verify


def _complete(study_dir):
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{study_dir}/tiny.db")
    return study, [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]


@pytest.mark.slow
def test_export_round_trip_outside_edgetune(tiny_study, tmp_path, digits):
    import onnxruntime
    import openvino as ov

    study, complete = _complete(tiny_study)
    trial = complete[0]
    result = CliRunner().invoke(app, ["export", "tiny", "--storage", f"sqlite:///{tiny_study}/tiny.db",
                                      "--trial", str(trial.number), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    folder = tmp_path / f"trial-{trial.number}"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["metrics"]["top1"] == trial.user_attrs["top1"] and manifest["params"] == trial.params
    assert {"deployed/model.xml", "deployed/model.bin", "model.onnx", "weights.safetensors"} <= set(manifest["files"])
    assert manifest["libraries"]["openvino"] and manifest["device"]["name"] == "openvino:CPU"
    assert manifest["baseline"]["source"] == study.user_attrs["baseline_source"]  # where the baseline came from
    assert verify(folder) == []

    images, labels = digits.x_val.numpy(), digits.y_val.numpy()
    # Plain OpenVINO, as the README shows: the Top-1 the manifest states.
    compiled = ov.Core().compile_model(str(folder / "deployed/model.xml"), "CPU",
                                       {"INFERENCE_PRECISION_HINT": manifest["device"]["inference_precision"]})
    predictions = np.concatenate([compiled(images[i:i + 64])[0].argmax(1) for i in range(0, len(images), 64)])
    assert (predictions == labels).mean() * 100 == pytest.approx(manifest["metrics"]["top1"], abs=0.3)
    # ONNX Runtime runs the float model; the PyTorch weights rebuild the same model.
    session = onnxruntime.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    onnx_logits = session.run(None, {"input": images[:32]})[0]
    from edgetune.objectives.model_files import load_pruned

    torch_logits = load_pruned(folder)(digits.x_val[:32]).detach().numpy()
    assert np.allclose(onnx_logits, torch_logits, atol=1e-3)


@pytest.mark.slow
def test_export_pareto_and_checksums_catch_tampering(tiny_study, tmp_path):
    result = CliRunner().invoke(app, ["export", "tiny", "--storage", f"sqlite:///{tiny_study}/tiny.db", "--pareto",
                                      "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    folders = sorted(tmp_path.glob("trial-*"))
    assert folders
    target = folders[0] / "deployed" / "model.bin"
    target.write_bytes(target.read_bytes()[:-1] + b"\x00")
    assert verify(folders[0]) == ["deployed/model.bin"]


def test_export_errors_are_one_line(study_dir, tmp_path):
    result = CliRunner().invoke(app, ["export", "nosuch", "--storage", f"sqlite:///{tmp_path}/none.db", "--pareto"])
    assert result.exit_code == 2 and f"error: no study database at {tmp_path}/none.db" in result.output
    assert not (tmp_path / "none.db").exists()
    optuna.create_study(study_name="other", storage=f"sqlite:///{tmp_path}/some.db")
    result = CliRunner().invoke(app, ["export", "nosuch", "--storage", f"sqlite:///{tmp_path}/some.db", "--pareto"])
    assert result.exit_code == 2 and "error: no study 'nosuch' in the storage" in result.output


def test_export_pareto_leaves_out_front_models_below_the_top1_floor():
    from edgetune.searcher.export import choose_trials
    from test_report import study_with_a_front_model_far_below_the_baseline

    study = study_with_a_front_model_far_below_the_baseline()
    chosen, left_out = choose_trials(study, None, True, 5.0)
    assert [t.number for t in chosen] == [2, 1, 0] and [r.number for r in left_out] == [3]
    chosen, left_out = choose_trials(study, None, True, 40.0)
    assert [t.number for t in chosen] == [3, 2, 1, 0] and left_out == []
    assert [t.number for t in choose_trials(study, [3], False, 5.0)[0]] == [3]  # named with --trial: exported as asked
    assert [t.number for t in choose_trials(study, None, True, 0.0)[0]] == [0]  # no loss at all: the one better model
    chosen, left_out = choose_trials(study, [3, 1], True, 5.0)  # both: the front, then what --trial adds
    assert [t.number for t in chosen] == [2, 1, 0, 3] and left_out == []


def test_a_negative_top1_floor_is_one_line():
    for command in ("export", "report"):
        result = CliRunner().invoke(app, [command, "--max-top1-drop", "-1"])
        assert result.exit_code == 2
        assert result.stderr.strip() == "error: --max-top1-drop: must be a number of points >= 0, got -1"
