"""When a study gives up on a model that cannot be pruned: the rule, on trials as Optuna stores them."""
import optuna
from optuna.trial import TrialState, create_trial

from edgetune.searcher.runner import SAME_FAILURES_TO_STOP, unprunable

BASE = 1000  # the baseline's parameters


def _failed(reason: str, **attrs):
    return create_trial(state=TrialState.FAIL, user_attrs={"failure": reason, **attrs})


def _complete(params: int):
    return create_trial(state=TrialState.COMPLETE, values=[1.0, 90.0], user_attrs={"params": params})


BROKEN = "PruneError: speedup produced a broken model: size mismatch [2, {}]"


def test_the_same_pruning_failure_again_and_again_stops_the_study():
    trials = [_complete(BASE)] + [_failed(BROKEN.format(n)) for n in range(SAME_FAILURES_TO_STOP)]  # int8 recipe first
    assert unprunable(trials, BASE) == BROKEN.format(SAME_FAILURES_TO_STOP - 1)
    assert unprunable(trials[:-1], BASE) is None  # one failure short


def test_a_model_that_was_pruned_once_or_fails_otherwise_goes_on():
    same = [_failed(BROKEN.format(n)) for n in range(SAME_FAILURES_TO_STOP)]
    assert unprunable(same + [_complete(BASE - 1)], BASE) is None  # a trial did prune it
    mixed = same[:-1] + [_failed("PruneError: speedup failed: EmptyLayerError")]
    assert unprunable(mixed, BASE) is None  # not the same reason
    other = [_failed("OutOfMemoryError: CUDA out of memory") for _ in range(SAME_FAILURES_TO_STOP)]
    assert unprunable(other, BASE) is None  # not a pruning failure
    stopped = [_failed(BROKEN.format(n), interrupted=True) for n in range(SAME_FAILURES_TO_STOP)]
    assert unprunable(stopped, BASE) is None  # interrupted trials are re-run, they say nothing of the model


def test_an_optuna_study_feeds_the_rule_as_stored(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/s.db", directions=["minimize", "maximize"])
    study.add_trials([_failed(BROKEN.format(n)) for n in range(SAME_FAILURES_TO_STOP)])
    assert unprunable(study.get_trials(deepcopy=False), BASE)
