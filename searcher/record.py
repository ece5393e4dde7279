"""What a study stores about itself (Optuna user attributes), written and read in one place.

Written once, under the study's lock, when the first worker bootstraps it (:mod:`searcher.study`);
read by every command. The keys are the contract of docs/ARCHITECTURE.md: ``spec``, ``groups``,
``groups_described``, ``stages``, ``block_importance``, ``channel_multiple`` (+ ``_source``),
``recipes``, ``data``, ``baseline_source``, ``sampler`` and the baseline's record under ``baseline_<name>``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import optuna

from .spec import target_of_unit

if TYPE_CHECKING:
    from edgetune.objectives.groups import LayerGroup

BASELINE = "baseline_"
#: where the baseline came from: the study's own attribute, which shares the baseline record's prefix
BASELINE_SOURCE = "baseline_source"


def baseline(study: optuna.Study) -> dict:
    """The baseline's record, under the names a trial uses (``latency_ms``, ``top1``, ...)."""
    return {k[len(BASELINE):]: v for k, v in study.user_attrs.items() if k.startswith(BASELINE) and k != BASELINE_SOURCE}


def baseline_source(study: optuna.Study) -> str | None:
    """Where the baseline came from (a checkpoint, a cached or fresh training run, the study's artifact)."""
    return study.user_attrs.get(BASELINE_SOURCE)


def has_baseline(study: optuna.Study) -> bool:
    """The bootstrap finished: the baseline's Top-1 is written last."""
    return f"{BASELINE}top1" in study.user_attrs


def write_baseline(study: optuna.Study, record: dict) -> None:
    # Top-1 last of all: its presence tells a resumed run that the bootstrap completed.
    for key in sorted(record, key=lambda k: k == "top1"):
        study.set_user_attr(f"{BASELINE}{key}", record[key])


def write_bootstrap(study: optuna.Study, groups: list[LayerGroup], described: list[dict], source: str, data) -> None:
    """The layer groups (with their parameter and FLOP shares), where the baseline came from, the data set."""
    study.set_user_attr("groups", [g.to_dict() for g in groups])
    study.set_user_attr("groups_described", [{k: v for k, v in d.items() if k != "layers"} for d in described])
    study.set_user_attr(BASELINE_SOURCE, source)
    study.set_user_attr("data", {"name": data.name, "classes": data.classes, "mean": list(data.mean),
                                 "std": list(data.std), "input_shape": list(data.image_shape)})


def write_stages(study: optuna.Study, stages: list, importance: dict[str, float]) -> None:
    study.set_user_attr("block_importance", importance)
    study.set_user_attr("stages", [s.to_dict() for s in stages])


def write_stream_error(study: optuna.Study, error: str | None) -> None:
    study.set_user_attr("stream_width_error", error)


def stream_error(study: optuna.Study) -> str | None:
    """Why the study does not search stream widths on its model (None: it can)."""
    return study.user_attrs.get("stream_width_error")


def block_importance(study: optuna.Study) -> dict[str, float]:
    return dict(study.user_attrs.get("block_importance") or {})


def write_channel_multiple(study: optuna.Study, multiple: int, source: str) -> None:
    study.set_user_attr("channel_multiple", multiple)
    study.set_user_attr("channel_multiple_source", source)


def searches_structure(study: optuna.Study) -> bool:
    """The study searches widths in multiples (and depth); older studies searched a sparsity."""
    return "channel_multiple" in study.user_attrs


def channel_multiple(study: optuna.Study) -> tuple[int, str]:
    """The multiple every searched width is made of, and where it came from (spec or device)."""
    return int(study.user_attrs.get("channel_multiple", 1)), str(study.user_attrs.get("channel_multiple_source", "spec"))


def write_recipes(study: optuna.Study, names: list[str]) -> None:
    study.set_user_attr("recipes", names)


def write_sampler(study: optuna.Study, name: str, why: str) -> None:
    """The sampler this run of the study uses, and why (a resume may name another with --sampler)."""
    if sampler(study) != {"name": name, "why": why}:
        study.set_user_attr("sampler", {"name": name, "why": why})


def sampler(study: optuna.Study) -> dict | None:
    """``{"name", "why"}`` of the sampler last used; None for studies from before it was recorded."""
    return study.user_attrs.get("sampler")


def check_model_source(study: optuna.Study, model: str, sha256: str | None) -> None:
    """A study of the user's own model keeps the SHA-256 of its file: a resume, a worker on another
    host or an export must build the same model, not silently another one."""
    if sha256 is None:
        return
    stored = study.user_attrs.get("model_sha256")
    if stored is None:
        study.set_user_attr("model_sha256", sha256)
    elif stored != sha256:
        from .spec import SpecError

        raise SpecError(f"study '{study.study_name}': the file behind model {model!r} changed since the study started "
                        f"(SHA-256 {stored[:12]}... then, {sha256[:12]}... now); restore it or choose another --study-name")


def spec_values(study: optuna.Study) -> dict:
    """The spec the study was started with (flat dotted keys), or {} for a study edgetune did not start."""
    return dict(study.user_attrs.get("spec") or {})


def targets(study: optuna.Study) -> list[str]:
    """The study's targets: its spec's, else (a study edgetune did not start) its metric names read as units."""
    return list(spec_values(study).get("study.targets") or []) or [target_of_unit(m) for m in study.metric_names or []]


def artifacts_dir(study: optuna.Study, given: str | None = None, storage_url: str | None = None) -> str:
    """Where the study's artifacts are: ``given`` (this host's view of the store), else the spec's.

    Studies store the path absolute; older ones stored it relative to the folder ``tune start`` ran in,
    which is looked up from the current folder, then beside the SQLite database (where the default
    spec puts both). A store that is not found is one line naming ``--artifacts``: a reading command
    must not create an empty one."""
    from pathlib import Path

    from .storage import StorageError

    if given:
        if not Path(given).expanduser().is_dir():
            raise StorageError(f"--artifacts {given}: no such folder")
        return given
    found, missing = find_artifacts_dir(study, storage_url)
    if found is None:
        raise StorageError(f"{missing}; name it with --artifacts DIR")
    return found


def find_artifacts_dir(study: optuna.Study, storage_url: str | None = None) -> tuple[str | None, str]:
    """The study's own artifact store as :func:`artifacts_dir` finds it, never created: (its folder, "")
    where it is there, else (None, where it was looked for)."""
    from pathlib import Path

    from .storage import sqlite_folder

    stored = spec_values(study).get("study.artifacts", "edgetune-artifacts")
    path = Path(stored).expanduser()
    beside = sqlite_folder(storage_url) if storage_url and not path.is_absolute() else None
    for candidate in [path] + ([beside / path] if beside else []):
        if candidate.is_dir():
            return str(candidate), ""
    where = (f"{path} is neither in {Path.cwd()} nor beside its database in {beside}" if beside
             else f"{path.absolute()} is not there")
    return None, f"study '{study.study_name}': its artifact store {where}"


def groups(study: optuna.Study) -> list[LayerGroup] | None:
    from edgetune.objectives.groups import LayerGroup

    stored = study.user_attrs.get("groups")
    return [LayerGroup.from_dict(g) for g in stored] if stored is not None else None


def group_names(study: optuna.Study) -> list[str]:
    return [g["name"] for g in study.user_attrs.get("groups", [])]


def stage_names(study: optuna.Study) -> list[str]:
    return [s["name"] for s in study.user_attrs.get("stages") or []]


def data_info(study: optuna.Study) -> dict:
    """The data set's name, classes, input normalisation and shape."""
    return dict(study.user_attrs.get("data") or {})
