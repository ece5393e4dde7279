"""The trial record's one definition (objectives/trial_record.py) and what enforces it where records are made.
Real records are checked against it by the studies of tests/test_study.py; its examples run as doctests."""
from pathlib import Path

import pytest

from edgetune.objectives.pipeline import PhaseClock
from edgetune.objectives.trial_record import ALWAYS, PHASES, unknown_keys
from edgetune.searcher.spec import TARGETS, target_unit

ROOT = Path(__file__).resolve().parents[1]


def test_a_phase_outside_the_contract_is_refused_before_it_runs():
    seen = []
    clock = PhaseClock(seen.append)
    with clock.phase("deploy"):
        pass
    with pytest.raises(ValueError, match="'deploy_model' is not in trial_record.PHASES"):
        with clock.phase("deploy_model"):
            seen.append("ran")
    assert seen == ["deploy"] and set(clock.seconds) == {"deploy"} <= set(PHASES)


@pytest.mark.parametrize("doc", ["README.md", "docs/ARCHITECTURE.md"])
def test_the_docs_point_to_the_one_definition(doc):
    assert "objectives/trial_record.py)" in (ROOT / doc).read_text()


def test_every_target_is_a_field_of_every_complete_trial():
    """A trial's objective values are read from its record (searcher.trial.Objective.result_of)."""
    assert {target_unit(t) for t in TARGETS} <= ALWAYS
    assert not unknown_keys({target_unit("latency@jetson"): 1.0})


def test_the_baseline_record_leaves_the_studys_own_baseline_source_out():
    """``baseline_source`` shares the baseline record's prefix: read as part of the record, it would be a
    ``source`` field no trial has."""
    import optuna

    from edgetune.searcher import record

    study = optuna.create_study(storage=optuna.storages.InMemoryStorage())
    study.set_user_attr("baseline_source", "checkpoint base.pt")
    record.write_baseline(study, {"latency_ms": 1.5, "top1": 71.0, "artifact_id": "a1"})
    assert record.baseline(study) == {"latency_ms": 1.5, "top1": 71.0, "artifact_id": "a1"}
    assert record.baseline_source(study) == "checkpoint base.pt"
