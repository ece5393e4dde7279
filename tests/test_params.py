"""searcher.params spells the trial parameters: a trial's params decode to its plan and encode back
unchanged, and the recipes ask only for what the space declares."""
from pathlib import Path

import optuna
import pytest
from optuna.distributions import IntDistribution

from edgetune.objectives.groups import OTHER, derive_groups
from edgetune.objectives.models import create_model
from edgetune.objectives.structure import residual_stages
from edgetune.searcher.params import DEPTH, FLOAT, INNER, PRECISION, PRUNER, WIDTH, Choices, decode, encode, param_name
from edgetune.searcher.recipes import enqueue_recipes, recipes
from edgetune.searcher.space import SearchSpace, Widths, build_space, distributions, plan_of, suggest_plan
from edgetune.searcher.spec import load_spec


@pytest.fixture(scope="module")
def resnet20():
    """ResNet-20's space at a multiple of 8, every dimension and two float precisions searched."""
    spec = load_spec(overrides={"model.name": "resnet20"})
    model = create_model("resnet20", 10)
    groups = derive_groups(model)
    return spec, groups, build_space(spec, model, groups, residual_stages(model), ["f32", "bf16", "int8"], 8)


def test_the_stored_spelling_is_kept():
    """Stored studies carry these names: a resumed one must find them unchanged."""
    choices = Choices(depth={"layer1": 2}, stream={"layer2": 3}, inner={"layer3": 4}, pruner="fpgm",
                      float_precision="bf16", precision={"layer1": "int8", OTHER: "float"}, sparsity={"layer1": 0.5})
    assert encode(choices) == {"depth.layer1": 2, "width.layer2": 3, "inner.layer3": 4, "pruner": "fpgm",
                               "precision.float": "bf16", "precision.layer1": "int8", "precision.other": "float",
                               "sparsity.layer1": 0.5}
    assert decode(encode(choices)) == choices


def test_a_name_it_does_not_spell_is_refused():
    with pytest.raises(ValueError, match="not an edgetune trial parameter: x, depth"):
        decode({param_name(DEPTH, "layer1"): 2, "x": 0.5, "depth": 1})


def test_a_trials_params_round_trip_and_decode_to_its_plan(resnet20):
    spec, groups, space = resnet20
    declared = distributions(spec, groups, space)
    assert {param_name(kind, part) for kind in (INNER, WIDTH, DEPTH) for part in ("layer2", "layer3")} < set(declared)
    assert {PRUNER, param_name(PRECISION, FLOAT), param_name(PRECISION, OTHER)} < set(declared)
    study = optuna.create_study(directions=["minimize", "maximize"], sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=4))
    for number in range(8):
        trial = study.ask()
        plan = suggest_plan(trial, spec, groups, space)
        assert trial.distributions == declared
        assert encode(decode(trial.params)) == trial.params
        assert plan_of(decode(trial.params), spec, groups, space, trial.number) == plan
        study.tell(trial, [float(sum(plan.inner.values())), float(number % 3)])


def test_the_recipes_ask_only_for_what_the_space_declares(resnet20):
    spec, groups, space = resnet20
    declared = distributions(spec, groups, space)
    offered = recipes(space, groups, spec["search.pruners"])
    assert len(offered) == 5
    for recipe in offered:
        for param, value in recipe.params.items():
            d = declared[param]
            assert d.low <= value <= d.high if isinstance(d, IntDistribution) else value in d.choices, (recipe.name, param)
    study = optuna.create_study(directions=["minimize", "maximize"])
    assert enqueue_recipes(study, space, groups, spec["search.pruners"], budget=20) == [r.name for r in offered]
    for recipe in offered:  # each runs as written, and sets every parameter the space asks for
        trial = study.ask()
        suggest_plan(trial, spec, groups, space)
        assert trial.params == recipe.params
        study.tell(trial, [1.0, 1.0])


def test_a_recipe_takes_a_float_precision_the_device_allows():
    """Two float precisions without f32 (search.precisions = ["bf16", "f16", "int8"]): the recipes take the
    first, where they took f32 and the first trial failed."""
    groups = derive_groups(create_model("resnet20", 10))
    space = SearchSpace(["bf16", "f16", "int8"], 8, "spec", inner={"layer3": Widths(64, 8, 2)})
    study = optuna.create_study(directions=["minimize", "maximize"])
    names = enqueue_recipes(study, space, groups, ["l1"], budget=20)
    assert names and all(decode(r.params).float_precision == "bf16" for r in recipes(space, groups, ["l1"]))
    plan = suggest_plan(study.ask(), load_spec(), groups, space)
    assert plan.float_precision == "bf16"


@pytest.mark.parametrize("doc", ["README.md", "docs/ARCHITECTURE.md"])
def test_the_docs_point_to_the_one_definition(doc):
    assert "searcher/params.py)" in (Path(__file__).resolve().parents[1] / doc).read_text()
