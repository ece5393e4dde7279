"""Study creation and resumption, sampler choice, and the one-time baseline bootstrap.

The baseline's record, the layer groups and the spec are stored on the study (user attributes):
a resumed study reuses them and never recomputes them.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import optuna

from edgetune.devices import create_device
from edgetune.devices.protocol import LatencyProtocol
from edgetune.objectives.accelerator import Accelerator, AcceleratorError, resolve
from edgetune.objectives.baseline import get_baseline
from edgetune.objectives.data import Splits, load_data
from edgetune.objectives.evaluate import collapsed
from edgetune.objectives.model_files import load_pruned
from edgetune.objectives.finetune import TrainSettings
from edgetune.objectives.groups import GroupRules, LayerGroup, derive_groups, describe_groups
from edgetune.objectives.models import create_model, source_sha256
from edgetune.objectives.pipeline import OtherDevice, TrialContext, deploy_baseline, evaluate_baseline, paired_with
from edgetune.objectives.structure import block_importance, residual_stages, stream_pruning_error

from .artifacts import ArtifactError, fetch, store_outcome
from . import record
from .locks import StudyLocks
from .recipes import enqueue_recipes
from .space import (SearchSpace, allowed_precisions, build_space, channel_multiple, check_fixed_precisions, check_searchable,
                    check_targets, quantization_route)
from .spec import Spec, SpecError, stored_spec, target_unit
from .storage import Heartbeat, open_storage, redact

#: keys whose change would make a resumed study's trials incomparable
FIXED_ON_RESUME = ("model.name", "model.checkpoint", "data.name", "data.dir", "data.image_size", "baseline.epochs",
                   "baseline.lr", "baseline.batch_size", "device.name", "device.also", "device.batch", "study.targets", "search.groups",
                   "search.exclude", "search.precisions", "search.sparsity_max", "search.pruners",
                   "search.channel_multiple", "search.inner_width", "search.stream_width", "search.depth")


#: validation images the block ranking is measured on (once per study)
RANKING_IMAGES = 512


def make_sampler(spec: Spec) -> optuna.samplers.BaseSampler:
    seed = spec["study.seed"]
    if spec.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=min(10, max(3, spec["study.trials"] // 3)))
    if spec.sampler == "nsga2":
        # A population of a third of the budget (4..50) leaves several generations to evolve.
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, min(50, spec["study.trials"] // 3)))
    return optuna.samplers.RandomSampler(seed=seed)


def open_study(spec: Spec, storage: optuna.storages.BaseStorage | None = None) -> optuna.Study:
    storage = storage or open_storage(spec["study.storage"])
    name = spec["study.name"]
    check_resume(spec, storage)
    study = optuna.create_study(storage=storage, study_name=name, sampler=make_sampler(spec),
                                directions=spec.directions, load_if_exists=True)
    if [d.name.lower() for d in study.directions] != spec.directions:
        raise SpecError(f"study '{name}' exists with other targets; choose another --study-name")
    if study.metric_names is None:
        study.set_metric_names([target_unit(t) for t in spec.targets])
    record.write_sampler(study, *spec.sampler_choice())
    return study


def check_resume(spec: Spec, storage: optuna.storages.BaseStorage) -> None:
    """An existing study of this name is resumed only with the settings its trials were run with, and
    with the same file behind a model of the user's own."""
    name = spec["study.name"]
    existing = optuna.get_all_study_names(storage)  # summaries would read every trial of every study
    found = optuna.load_study(study_name=name, storage=storage) if name in existing else None
    if found is None:
        return
    if found.user_attrs.get("spec"):
        stored = stored_spec(found.user_attrs["spec"])  # today's defaults fill keys added since
        for key in FIXED_ON_RESUME:
            if stored[key] != spec[key]:
                raise SpecError(f"study '{name}' exists with {key} = {stored[key]!r}, not {spec[key]!r}; "
                                "resume it with the same settings or choose another --study-name")
    if found.user_attrs.get("model_sha256"):
        record.check_model_source(found, spec["model.name"], source_sha256(spec["model.name"]))


def data_id(spec: Spec) -> dict:
    return {k: spec[k] for k in ("data.name", "data.dir", "data.image_size", "data.val_fraction")}


def load_spec_data(spec: Spec) -> Splits:
    return load_data(spec["data.name"], spec["data.dir"], spec["data.image_size"], spec["data.download"],
                     spec["data.val_fraction"], seed=0, in_memory=spec["data.in_memory"], workers=spec["data.workers"])


def baseline_settings(spec: Spec) -> TrainSettings:
    return TrainSettings(spec["baseline.epochs"], spec["baseline.lr"], spec["baseline.batch_size"], seed=spec["study.seed"])


def train_on(spec: Spec) -> Accelerator:
    """Where this process trains (spec ``[train]``, resolved on this host); one line when the host
    lacks the device. Not part of FIXED_ON_RESUME: each worker trains on its own host's device."""
    try:
        return resolve(spec["train.device"], spec["train.amp"])
    except AcceleratorError as error:
        raise SpecError(str(error)) from None


def make_device(spec: Spec, name: str | None = None):
    protocol = LatencyProtocol(target_ci_rel=spec["device.latency_ci"], max_seconds=spec["device.latency_max_seconds"],
                               warmup_seconds=spec["device.latency_warmup_seconds"])
    return create_device(name or spec["device.name"], threads=spec["device.threads"], protocol=protocol,
                         batch=spec["device.batch"])


def group_rules(spec: Spec) -> GroupRules:
    return GroupRules(overrides=dict(spec["search.groups"] or {}), exclude=list(spec["search.exclude"]))


def heartbeat(spec: Spec) -> Heartbeat:
    return Heartbeat(spec["study.heartbeat_interval"], spec["study.grace_period"], spec["study.max_retry"])


@dataclass
class Prepared:
    study: optuna.Study
    context: TrialContext
    baseline: dict  # the baseline's record (without the prefix)
    baseline_source: str
    space: SearchSpace  # what trials may use: widths, depths, precisions within what the device runs
    locks: StudyLocks

    @property
    def precisions(self) -> list[str]:
        return self.space.precisions


def _baseline_model(spec: Spec, study: optuna.Study, data: Splits, on_status: Callable[[str], None],
                    on: Accelerator):
    """The study's own baseline when it has one (stored once, shared by every worker on every host),
    else the local cache or a training run."""
    stored = record.baseline(study)
    if stored.get("artifact_id"):
        with tempfile.TemporaryDirectory() as tmp:
            try:
                folder = fetch(spec["study.artifacts"], stored["artifact_id"], Path(tmp), stored.get("artifact_sha256"))
            except ArtifactError as error:
                raise SpecError(f"study '{study.study_name}': its baseline {error}") from None  # (names --artifacts)
            return load_pruned(folder), "the study's artifact"
    epochs = spec["baseline.epochs"]
    return get_baseline(spec["model.name"], data, data_id(spec), baseline_settings(spec), spec["model.checkpoint"],
                        on_epoch=lambda e, loss: on_status(f"baseline: {e + 1}/{epochs} epochs trained (loss {loss:.3f})"),
                        on=on)


@dataclass
class _Checked:
    """Everything a user can get wrong, checked before a study is created or a model trained."""

    device: object
    also: list[OtherDevice]
    precisions: list[str]
    storage: optuna.storages.BaseStorage
    locks: StudyLocks
    data: Splits
    groups: list[LayerGroup]
    checkpoint: tuple | None  # (model, "checkpoint") when the spec names one
    model: object  # the checkpoint's model, else the spec's model untrained: its widths are the baseline's
    train_on: Accelerator


def validate(spec: Spec, on_status: Callable[[str], None] = lambda s: None) -> _Checked:
    on = train_on(spec)
    device = make_device(spec)
    also = [OtherDevice(name, make_device(spec, name)) for name in spec["device.also"]]
    check_targets(spec, device.info())
    if spec["search.quantization"] == "qat-qdq" and not device.runs_model_int8_scales:
        raise SpecError(f'search.quantization = "qat-qdq": {device.info().name} cannot run a model\'s own int8 '
                        'quantize/dequantize ops (the OpenVINO and ONNX Runtime devices can); use "qat" or "auto"')
    precisions = allowed_precisions(spec, device.info())
    storage = open_storage(spec["study.storage"], heartbeat(spec))
    locks = StudyLocks(spec["study.storage"], spec["study.name"])
    on_status("loading data")
    data = load_spec_data(spec)
    model = create_model(spec["model.name"], data.num_classes)
    groups = derive_groups(model, group_rules(spec))
    check_fixed_precisions(spec, groups)
    checkpoint = None
    if spec["model.checkpoint"]:
        checkpoint = get_baseline(spec["model.name"], data, data_id(spec), baseline_settings(spec), spec["model.checkpoint"])
        model = checkpoint[0]
    check_resume(spec, storage)  # once the model is known to be one (again under the lock, in open_study)
    return _Checked(device, also, precisions, storage, locks, data, groups, checkpoint, model, on)


def check_new_space(spec: Spec, checked: _Checked) -> None:
    """A new study whose space is one point stops before it is created or its baseline trained, so that
    the spec can still change (``search.channel_multiple`` is fixed once a study exists). Its streams
    count as prunable here; :func:`prepare` checks again once the baseline has told."""
    if spec["study.name"] in optuna.get_all_study_names(checked.storage):
        return  # its space is the one it stored (the multiple of the host that started it): prepare checks that
    multiple, source = channel_multiple(spec, checked.device.info(), checked.precisions)
    check_searchable(spec, checked.groups, build_space(spec, checked.model, checked.groups, residual_stages(checked.model),
                                                       checked.precisions, multiple, source))


def _structure_facts(spec: Spec, study: optuna.Study, checked: _Checked, model, stages, on_status) -> None:
    """Once per study, from the trained baseline: the residual stages, which blocks a shallower
    model drops first, and the channel multiple widths are made of."""
    attrs = study.user_attrs
    if "block_importance" not in attrs:
        on_status("baseline: ranking its blocks")
        count = min(RANKING_IMAGES, len(checked.data.val))
        images, labels = checked.data.val.take(range(count)), checked.data.y_val[:count]
        record.write_stages(study, stages, block_importance(model, stages, images, labels, on=checked.train_on))
    if "channel_multiple" not in attrs:
        record.write_channel_multiple(study, *channel_multiple(spec, checked.device.info(), checked.precisions))
    if "stream_width_error" not in attrs and stages and spec["search.stream_width"]:
        on_status("baseline: checking its residual streams can be pruned")
        record.write_stream_error(study, stream_pruning_error(model, stages, checked.data.example_input(2),
                                                              record.channel_multiple(study)[0]))


def check_baseline_learned(top1: float, classes: int, spec: Spec) -> None:
    """A baseline at chance level makes every front meaningless: stop before searching against it."""
    if collapsed(top1, classes, spec["search.collapse_margin"]):
        raise SpecError(f"the baseline learned nothing: Top-1 {top1:.1f}% on the validation split, chance is "
                        f"{100 / classes:.1f}%; train it longer (--set baseline.epochs=N, now {spec['baseline.epochs']}), "
                        "give more data, or pass trained weights with --checkpoint")


def prepare(spec: Spec, on_status: Callable[[str], None] = lambda s: None, joining: bool = False,
            checked: _Checked | None = None) -> Prepared:
    """Open or create the study; on first use, derive groups and measure the baseline.

    Three steps: :func:`validate` (before anything is created), the bootstrap under the study's
    lock (with several workers, the first one trains and measures the baseline and stores what
    the study keeps about itself; the others wait, then reuse it), then the trial context. A
    ``joining`` worker (``tune worker``, ``tune finalize``) runs the stored spec and leaves it as it is.
    ``checked``: :func:`validate`'s result when the caller ran it first (`tune start`, before its header).
    """
    if checked is None:  # else the caller validated it, space included (tune start, before its header)
        checked = validate(spec, on_status)
        if not joining:
            check_new_space(spec, checked)
    on_status("waiting for the study's lock")
    with checked.locks.critical("bootstrap"):
        study = open_study(spec, checked.storage)
        record.check_model_source(study, spec["model.name"], source_sha256(spec["model.name"]))
        if not joining:  # workers joining later read the spec (and the latest trial budget) from here
            study.set_user_attr("spec", stored_values(spec))
        on_status("baseline: loading or training")
        model, source = checked.checkpoint or _baseline_model(spec, study, checked.data, on_status, checked.train_on)
        groups = record.groups(study) or checked.groups  # a resumed study keeps the groups it started with
        stages = residual_stages(model)
        _structure_facts(spec, study, checked, model, stages, on_status)
        multiple, multiple_source = record.channel_multiple(study)
        space = build_space(spec, model, groups, stages, checked.precisions, multiple, multiple_source,
                            record.stream_error(study), quantization_route(spec, checked.device.runs_model_int8_scales))
        if not joining:
            check_searchable(spec, groups, space)
        if spec["search.recipes"] and not joining and "recipes" not in study.user_attrs:
            chosen = None if spec["search.recipes"] is True else spec["search.recipes"]
            record.write_recipes(study, enqueue_recipes(study, space, groups, spec["search.pruners"], spec["study.trials"],
                                                        chosen))
        unpaired = TrialContext(model, checked.data, groups, checked.device, collapse_margin=spec["search.collapse_margin"],
                               calibration_size=spec["data.calibration_size"], throughput=spec["device.throughput"],
                               energy=spec["device.energy"] or "energy" in spec.targets,
                               also=checked.also, stages=stages, block_importance=record.block_importance(study),
                               train_on=checked.train_on)
        if not record.has_baseline(study):
            on_status("baseline: deploying and measuring on the device")
            outcome, others = evaluate_baseline(unpaired)
            check_baseline_learned(outcome.attributes["top1"], checked.data.num_classes, spec)
            deployment = outcome.deployment
            measured = dict(outcome.attributes)
            measured.update(store_outcome(study, outcome, spec, checked.data, "baseline"))
            record.write_bootstrap(study, groups, describe_groups(model, groups, checked.data.example_input(2)), source,
                                   checked.data)
            record.write_baseline(study, measured)  # last: its Top-1 tells a resumed run the bootstrap completed
        else:
            on_status("baseline: deploying (recorded latency reused)")
            deployment, others = deploy_baseline(unpaired)
    baseline = record.baseline(study)
    return Prepared(study, paired_with(unpaired, deployment, others, baseline), baseline, source, space, checked.locks)


def stored_values(spec: Spec) -> dict:
    """The spec as stored on the study: the storage URL without its password, the artifact store as an
    absolute path (`tune report` and `tune export` find it from any folder)."""
    values = spec.to_dict()
    values["study.storage"] = redact(values["study.storage"])
    values["study.artifacts"] = str(Path(values["study.artifacts"]).expanduser().absolute())
    return values
