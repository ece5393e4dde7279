"""`tune finalize`: a longer fine-tune of front models, stored as new trials of the study."""
import optuna
import pytest
from typer.testing import CliRunner

from conftest import copy_of_study
from edgetune.searcher.cli import app
from edgetune.searcher.pareto import front
from edgetune.searcher.worker import budget_used


@pytest.mark.slow
def test_finalize_adds_a_trial_from_the_original_weights_and_resumes(tiny_study, tmp_path):
    folder = copy_of_study(tiny_study, tmp_path)  # finalizing adds trials: not to the study other tests share
    storage = f"sqlite:///{folder}/tiny.db"
    moved = ["--artifacts", str(folder / "artifacts")]
    study = optuna.load_study(study_name="tiny", storage=storage)
    used = budget_used(study.get_trials(deepcopy=False))
    original = front(study)[0]
    result = CliRunner().invoke(app, ["finalize", "tiny", "--storage", storage, "--epochs", "1", "--trial", str(original.number), *moved])
    assert result.exit_code == 0, result.output
    assert f"trial {original.number} -> " in result.output
    assert "models finalized" in result.output and "1/1" in result.output  # its progress counts models, not the budget
    study = optuna.load_study(study_name="tiny", storage=storage)
    finalized = [t for t in study.trials if t.user_attrs.get("finalized_from") == original.number]
    assert len(finalized) == 1 and finalized[0].state == optuna.trial.TrialState.COMPLETE
    a, before = finalized[0].user_attrs, original.attrs
    assert finalized[0].params == study.trials[original.number].params
    assert a["artifact_id"] != before["artifact_id"] and a["fine_tune_epochs"] == 1
    # the same structure, measured again
    assert (a["params"], a["channels"], a.get("depth")) == (before["params"], before["channels"], before.get("depth"))
    assert budget_used(study.get_trials(deepcopy=False)) == used  # finalizing spends no search budget
    # run again: already finalized, nothing new
    again = CliRunner().invoke(app, ["finalize", "tiny", "--storage", storage, "--epochs", "1", "--trial", str(original.number), *moved])
    assert again.exit_code == 0, again.output
    assert len(optuna.load_study(study_name="tiny", storage=storage).trials) == len(study.trials)


@pytest.mark.slow
def test_finalize_refuses_a_trial_the_study_lacks(tiny_study):
    storage = f"sqlite:///{tiny_study}/tiny.db"
    result = CliRunner().invoke(app, ["finalize", "tiny", "--storage", storage, "--trial", "999"])
    assert result.exit_code == 2 and "has no trial 999" in result.output
