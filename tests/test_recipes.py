"""Recipe seeds: hand-made settings enqueued first in a new study."""
import optuna

from edgetune.objectives.groups import LayerGroup
from edgetune.searcher.params import decode
from edgetune.searcher.recipes import enqueue_recipes, recipes
from edgetune.searcher.space import SearchSpace, Widths, suggest_plan
from edgetune.searcher.spec import load_spec

GROUPS = [LayerGroup("layer1", ["layer1.0.conv1"], scopes=["layer1"]), LayerGroup("layer2", ["layer2.0.conv1"], scopes=["layer2"])]
SPACE = SearchSpace(["f32", "int8"], 8, "spec", inner={"layer1": Widths(16, 8, 1), "layer2": Widths(32, 8, 1)},
                    stream={"layer1": Widths(16, 8, 1), "layer2": Widths(32, 8, 1)}, depth={"layer1": (1, 9), "layer2": (1, 9)})


def test_recipes_are_int8_and_uniform_shares_of_every_dimension():
    found = {r.name: decode(r.params) for r in recipes(SPACE, GROUPS, ["l1", "fpgm"])}
    # int8 first: on an int8 device the float shares were dominated by their int8 twins
    assert list(found) == ["int8", "uniform-2/3+int8", "uniform-1/3+int8", "uniform-2/3", "uniform-1/3"]
    assert found["int8"].depth["layer1"] == 9 and found["int8"].inner["layer2"] == 4
    assert found["int8"].precision == {"layer1": "int8", "layer2": "int8", "other": "int8"}
    third = found["uniform-1/3"]
    assert (third.depth["layer1"], third.stream["layer2"], third.inner["layer2"]) == (3, 2, 2)
    assert third.pruner == "l1" and third.precision["other"] == "float"
    assert "int8" not in [r.name for r in recipes(SearchSpace(["f32"], 8, "spec", inner=SPACE.inner), GROUPS, ["l1"])]


def test_a_new_study_runs_them_first_and_marks_them():
    spec = load_spec()
    study = optuna.create_study(directions=["minimize", "maximize"])
    names = enqueue_recipes(study, SPACE, GROUPS, ["l1", "fpgm"], budget=20)
    assert names == ["int8", "uniform-2/3+int8", "uniform-1/3+int8", "uniform-2/3", "uniform-1/3"]
    trial = study.ask()
    plan = suggest_plan(trial, spec, GROUPS, SPACE)
    assert trial.user_attrs["seeded"] == "int8"
    assert plan.int8_groups == {"layer1", "layer2", "other"} and plan.depth == {"layer1": 9, "layer2": 9}
    assert enqueue_recipes(study, SPACE, GROUPS, ["l1"], budget=20) == []  # only in a study without trials


def test_a_small_budget_gets_at_most_a_quarter_in_recipes():
    study = optuna.create_study(directions=["minimize", "maximize"])
    assert enqueue_recipes(study, SPACE, GROUPS, ["l1"], budget=8) == ["int8", "uniform-2/3+int8"]


def test_the_spec_can_name_the_recipes_and_their_order():
    import pytest

    from edgetune.searcher.spec import SpecError

    chosen = load_spec(overrides={"search.recipes": ["uniform-1/3", "int8"]})["search.recipes"]
    study = optuna.create_study(directions=["minimize", "maximize"])
    assert enqueue_recipes(study, SPACE, GROUPS, ["l1"], budget=20, names=chosen) == ["uniform-1/3", "int8"]
    assert [t.user_attrs["seeded"] for t in study.get_trials(states=[optuna.trial.TrialState.WAITING])] == chosen
    # an int8 recipe where the device has no int8 is left out, not an error
    floats = SearchSpace(["f32"], 8, "spec", inner=SPACE.inner)
    assert enqueue_recipes(optuna.create_study(), floats, GROUPS, ["l1"], budget=20, names=chosen) == ["uniform-1/3"]
    for bad in (["int4"], ["int8", "int8"], "int8"):
        with pytest.raises(SpecError, match="search.recipes"):
            load_spec(overrides={"search.recipes": bad})
