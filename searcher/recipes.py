"""Recipe seeds: the settings a person would try by hand, run first in every new study.

A new study enqueues them before the sampler proposes anything (Optuna's ``enqueue_trial``), so
its front always contains or dominates them and the sampler starts from them. Each is marked on
its trial (user attribute ``seeded`` = the recipe's name):

- ``int8``: the uncompressed model, every layer int8 ("just quantize it");
- ``uniform-2/3+int8``, ``uniform-1/3+int8``: every searched dimension kept at that share (blocks per
  stage, stream and inner widths, rounded to whole multiples), every layer int8 ("prune uniformly,
  then quantize");
- ``uniform-2/3``, ``uniform-1/3``: the same in float, after the int8 ones: on an int8 device the
  float 2/3 model was dominated by its int8 twin in all 7 stored studies that ran both (BENCHMARKS.md).

A study gets at most a quarter of its budget in recipes, in the order above, or those named in
``search.recipes`` in their order.
"""
from __future__ import annotations

from dataclasses import dataclass

import optuna

from edgetune.objectives.groups import OTHER, LayerGroup

from .params import Choices, encode
from .space import SearchSpace
from .spec import RECIPES

SHARES = (("2/3", 2 / 3), ("1/3", 1 / 3))


@dataclass(frozen=True)
class Recipe:
    name: str
    params: dict


def _precisions(space: SearchSpace, groups: list[LayerGroup], int8: bool) -> dict:
    floats = [p for p in space.precisions if p != "int8"]
    float_precision = "f32" if "f32" in floats else floats[0]  # the baseline's, where the device allows it
    return {"float_precision": float_precision if len(floats) > 1 else None,
            "precision": {name: "int8" if int8 else "float" for name in [g.name for g in groups] + [OTHER]}}


def _structure(space: SearchSpace, share: float | None) -> dict:
    """Every searched dimension kept at ``share`` (None: kept whole)."""
    return {"inner": {g: w.most if share is None else w.kept_at(share) for g, w in space.inner.items() if w.searched},
            "stream": {s: w.most if share is None else w.kept_at(share) for s, w in space.stream.items() if w.searched},
            "depth": {s: hi if share is None else max(lo, round(hi * share)) for s, (lo, hi) in space.depth.items() if hi > lo}}


def recipes(space: SearchSpace, groups: list[LayerGroup], pruners: list[str]) -> list[Recipe]:
    """The recipes this space offers, in the order they are run."""
    has_int8 = "int8" in space.precisions
    pruner = ("l1" if "l1" in pruners else pruners[0]) if len(pruners) > 1 else None
    found = {}
    if has_int8:
        found["int8"] = Choices(**_structure(space, None), pruner=pruner, **_precisions(space, groups, True))
    for label, share in SHARES:
        structure = _structure(space, share)
        if not any(structure.values()):
            continue
        found[f"uniform-{label}"] = Choices(**structure, pruner=pruner, **_precisions(space, groups, False))
        if has_int8:
            found[f"uniform-{label}+int8"] = Choices(**structure, pruner=pruner, **_precisions(space, groups, True))
    return [Recipe(name, encode(found[name])) for name in RECIPES if name in found]


def enqueue_recipes(study: optuna.Study, space: SearchSpace, groups: list[LayerGroup], pruners: list[str],
                    budget: int, names: list[str] | None = None) -> list[str]:
    """Enqueue the recipes in a study that has no trial yet (at most a quarter of ``budget``): all
    in their order, or those ``names`` lists in its order (those the space does not offer left out)."""
    if study.get_trials(deepcopy=False):
        return []
    offered = {r.name: r for r in recipes(space, groups, pruners)}
    chosen = [offered[n] for n in names if n in offered] if names is not None else list(offered.values())
    chosen = chosen[: max(1, budget // 4)]
    for recipe in chosen:
        study.enqueue_trial(recipe.params, user_attrs={"seeded": recipe.name}, skip_if_exists=True)
    return [r.name for r in chosen]
