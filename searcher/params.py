"""The names of a trial's Optuna parameters: the one module that spells them.

A trial's parameters (``trial.params``, stored by Optuna under these names) are its choices, as
:class:`Choices` holds them: ``kind.part``, the part a stage, a layer group (or ``other``: the stem
and head) or ``float``. :func:`encode` and :func:`decode` turn one into the other:

>>> choices = Choices(depth={"layer1": 2}, stream={"layer1": 1}, inner={"layer2": 3}, pruner="l1",
...                   float_precision="bf16", precision={"layer1": "int8", "other": "float"})
>>> encode(choices)  # doctest: +NORMALIZE_WHITESPACE
{'inner.layer2': 3, 'width.layer1': 1, 'depth.layer1': 2, 'pruner': 'l1', 'precision.float': 'bf16',
 'precision.layer1': 'int8', 'precision.other': 'float'}
>>> decode(encode(choices)) == choices
True

``searcher.space`` says which of them a study searches and with what range (``tune groups`` prints
them); everything else asks this module for a name. Stored studies carry these names, and a resumed
study must find the same ones: changing a spelling here orphans every existing study.
"""
from __future__ import annotations

from dataclasses import dataclass, field

DEPTH = "depth"  # blocks kept in a residual stage
WIDTH = "width"  # whole channel multiples kept by a stage's residual stream
INNER = "inner"  # whole channel multiples kept by a layer group's widest inner layer
PRECISION = "precision"  # per group "float" or "int8"; ``precision.float``: the model's float precision
SPARSITY = "sparsity"  # share of a group's width removed: studies from before widths were searched (read only)
PRUNER = "pruner"  # NNI's criterion for the inner channels: a name of its own, no part
FLOAT = "float"  # the part of ``precision.float``

# The kinds that change the network's shape, with what their value counts (the report's legend).
STRUCTURAL = {DEPTH: "blocks kept per stage", WIDTH: "residual-stream multiples kept",
              INNER: "inner-width multiples kept", SPARSITY: "share of a width removed"}


def param_name(kind: str, part: str) -> str:
    """``param_name(INNER, "layer1") == "inner.layer1"``."""
    return f"{kind}.{part}"


def kind_of(param: str) -> str:
    """``kind_of("inner.layer1") == "inner"``; ``kind_of("pruner") == "pruner"``."""
    return param.partition(".")[0]


def structural(param: str) -> bool:
    """Whether the parameter changes the network's shape (one of the :data:`STRUCTURAL` kinds)."""
    return "." in param and kind_of(param) in STRUCTURAL


def of_kind(params: dict, kind: str) -> dict:
    """Part -> value of the parameters of one kind, in their order in ``params``."""
    return {p.partition(".")[2]: v for p, v in params.items() if "." in p and kind_of(p) == kind}


@dataclass(frozen=True)
class Choices:
    """One trial's choices as the sampler sees them: counts of multiples and blocks, names. What a dict
    leaves out was not searched (``searcher.space.plan_of`` fills it in from the spec)."""

    depth: dict[str, int] = field(default_factory=dict)  # stage -> blocks kept
    stream: dict[str, int] = field(default_factory=dict)  # stage -> residual-stream multiples kept
    inner: dict[str, int] = field(default_factory=dict)  # group -> inner-width multiples kept
    pruner: str | None = None
    float_precision: str | None = None
    precision: dict[str, str] = field(default_factory=dict)  # group (or other) -> "float" | "int8"
    sparsity: dict[str, float] = field(default_factory=dict)  # group -> share removed (old studies)


def encode(choices: Choices) -> dict:
    """The trial parameters that make ``choices`` (what ``study.enqueue_trial`` takes)."""
    params = {param_name(INNER, g): v for g, v in choices.inner.items()}
    params |= {param_name(WIDTH, s): v for s, v in choices.stream.items()}
    params |= {param_name(DEPTH, s): v for s, v in choices.depth.items()}
    params |= {param_name(SPARSITY, g): v for g, v in choices.sparsity.items()}
    if choices.pruner is not None:
        params[PRUNER] = choices.pruner
    if choices.float_precision is not None:
        params[param_name(PRECISION, FLOAT)] = choices.float_precision
    params |= {param_name(PRECISION, g): v for g, v in choices.precision.items()}
    return params


def decode(params: dict) -> Choices:
    """The choices a trial's parameters make; a name this module does not spell is a ValueError."""
    precision = of_kind(params, PRECISION)
    unknown = [p for p in params if p != PRUNER and not structural(p) and not ("." in p and kind_of(p) == PRECISION)]
    if unknown:
        raise ValueError(f"not an edgetune trial parameter: {', '.join(unknown)}")
    return Choices(depth=of_kind(params, DEPTH), stream=of_kind(params, WIDTH), inner=of_kind(params, INNER),
                   pruner=params.get(PRUNER), float_precision=precision.pop(FLOAT, None), precision=precision,
                   sparsity=of_kind(params, SPARSITY))
