"""The study specification: a TOML file (studies/default.toml is embedded) plus CLI overrides.

Every key is declared once in :data:`KEYS` with its type and what is allowed, so an invalid
spec fails with one line naming the key::

    spec key 'finetune.epochs': must be an integer >= 0, got 'two'
"""
from __future__ import annotations

import copy
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable

from edgetune.objectives.choices import DATASETS, PRUNERS, TRAIN_AMP, TRAIN_DEVICES, train_device_ok

from .storage import default_storage

#: The hand-made recipes ``search.recipes`` may name, in the order a study runs them (searcher/recipes.py
#: builds them; the int8 ones only where the device runs int8).
RECIPES = ("int8", "uniform-2/3+int8", "uniform-1/3+int8", "uniform-2/3", "uniform-1/3")
TARGETS = {"latency": "minimize", "top1": "maximize", "size": "minimize", "params": "minimize", "flops": "minimize",
           "memory": "minimize", "energy": "minimize"}
#: ``memory``: the deployed model's inference memory as its device measures it (devices.base.Deployment.memory_bytes);
#: ``energy``: millijoules per inference of one batch from the device's energy counter (devices.energy)
TARGET_UNITS = {"latency": "latency_ms", "top1": "top1", "size": "size_bytes", "params": "params", "flops": "flops",
                "memory": "memory_bytes", "energy": "energy_mj"}
#: ``latency@DEVICE``: the latency on one of ``device.also`` (attribute ``latency_ms@DEVICE``)
ON_DEVICE = "@"


def target_unit(target: str) -> str:
    """The trial attribute that holds a target's value: ``latency@cpu`` -> ``latency_ms@cpu``."""
    base, sep, device = target.partition(ON_DEVICE)
    return TARGET_UNITS[base] + (f"{ON_DEVICE}{device}" if sep else "")


def target_direction(target: str) -> str:
    return TARGETS[target.partition(ON_DEVICE)[0]]


def target_of_unit(unit: str) -> str:
    base, sep, device = unit.partition(ON_DEVICE)
    return next(k for k, v in TARGET_UNITS.items() if v == base) + (f"{ON_DEVICE}{device}" if sep else "")


SAMPLERS = ("auto", "tpe", "nsga2", "random")
#: Why ``auto`` is TPE, for one target and several (BENCHMARKS.md, "Is the search better than the alternatives?"
#: and "TPE against NSGA-II at 40 trials").
AUTO_SAMPLER_REASON = ("auto: multi-objective TPE found the best fronts at 10 trials (3 seeds, two tasks) and at 40 "
                       "(3 seeds, quick task); NSGA-II led only at 10-20 trials of one seed, by 3%")
PRECISIONS = ("f32", "bf16", "f16", "int8")
QUANTIZATION = ("auto", "qat", "qat-qdq", "ptq")


class SpecError(ValueError):
    """An invalid study specification; the message names the key and what is allowed."""


@dataclass(frozen=True)
class Key:
    kind: type | tuple
    allowed: str
    check: Callable[[Any], bool] = lambda v: True
    optional: bool = False


def _target_ok(t) -> bool:
    base, sep, device = t.partition(ON_DEVICE) if isinstance(t, str) else ("", "", "")
    return base in TARGETS and (not sep or (base == "latency" and bool(device)))


def _targets_ok(v) -> bool:
    return isinstance(v, list) and len(v) > 0 and all(_target_ok(t) for t in v) and len(set(v)) == len(v)


def _regex_list_ok(v) -> bool:
    import re

    if not (isinstance(v, list) and all(isinstance(p, str) for p in v)):
        return False
    for pattern in v:
        try:
            re.compile(pattern)
        except re.error as error:  # which one, and why: "a list of regular expressions" alone does not say
            raise SpecError(f"spec key 'search.exclude': {pattern!r} is not a regular expression ({error})") from None
    return True


def _precisions_ok(v) -> bool:
    return v == "auto" or (isinstance(v, list) and bool(v) and all(p in PRECISIONS for p in v) and len(set(v)) == len(v))


def _fixed_precisions_ok(v) -> bool:
    return isinstance(v, dict) and all(isinstance(k, str) and p in PRECISIONS for k, p in v.items())


def _groups_ok(v) -> bool:
    return isinstance(v, dict) and all(isinstance(k, str) and _regex_list_ok(p) and p for k, p in v.items())


KEYS: dict[str, Key] = {
    "study.name": Key(str, "a non-empty string (default: MODEL-DATA)", lambda v: bool(v.strip()), optional=True),
    "study.storage": Key(str, "an SQLAlchemy URL, e.g. sqlite:///edgetune.db", lambda v: "://" in v),
    "study.artifacts": Key(str, "a directory path"),
    "study.targets": Key(list, f"a non-empty list of distinct targets from: {', '.join(TARGETS)} "
                               "(or latency@DEVICE for a device of device.also)", _targets_ok),
    "study.sampler": Key(str, f"one of: {', '.join(SAMPLERS)}", lambda v: v in SAMPLERS),
    "study.trials": Key(int, "an integer >= 1", lambda v: v >= 1),
    "study.seed": Key(int, "an integer >= 0", lambda v: v >= 0),
    "study.max_top1_drop": Key((int, float), "a number of points >= 0", lambda v: v >= 0, optional=True),
    "study.max_latency_ms": Key((int, float), "a latency in milliseconds > 0 (slower trials are infeasible; "
                                "screened before fine-tuning)", lambda v: v > 0, optional=True),
    "study.min_speedup": Key((int, float), "a factor >= 1 over the baseline's latency (slower trials are infeasible; "
                             "screened before fine-tuning)", lambda v: v >= 1, optional=True),
    "study.max_class_drop": Key((int, float), "a number of points >= 0 (worst per-class Top-1 drop)",
                                lambda v: v >= 0, optional=True),
    "study.workers": Key(int, "an integer >= 1 (local worker processes; several need PostgreSQL or MySQL)", lambda v: v >= 1),
    "study.heartbeat_interval": Key(int, "a number of seconds >= 1", lambda v: v >= 1),
    "study.grace_period": Key(int, "a number of seconds >= 2 (silence after which a running trial is failed)", lambda v: v >= 2),
    "study.max_retry": Key(int, "an integer >= 0 (re-runs of a trial whose worker died)", lambda v: v >= 0),
    "study.db_patience": Key((int, float), "a number of seconds >= 0 (how long to retry an unreachable database)",
                             lambda v: v >= 0),
    "model.name": Key(str, "a model name (`tune models` lists them)", lambda v: bool(v)),
    "model.checkpoint": Key(str, "a path to a state-dict checkpoint", optional=True),
    "data.name": Key(str, f"one of: {', '.join(DATASETS)}", lambda v: v in DATASETS),
    "data.dir": Key(str, "a directory path", optional=True),
    "data.image_size": Key(int, "an integer >= 8", lambda v: v >= 8, optional=True),
    "data.download": Key(bool, "true or false"),
    "data.calibration_size": Key(int, "an integer >= 1 (training images for int8 calibration)", lambda v: v >= 1),
    "data.val_fraction": Key((int, float), "a number in (0, 0.5]", lambda v: 0 < v <= 0.5),
    "data.in_memory": Key((bool, str), 'true, false or "auto" (image folders: hold the decoded images in memory, or '
                       'stream them from disk; auto: in memory up to 2 GiB)', lambda v: v in (True, False, "auto")),
    "data.workers": Key((int, str), '"auto" or an integer >= 0 (loader processes of a streamed image folder; 0: none)',
                        lambda v: v == "auto" or (isinstance(v, int) and v >= 0)),
    "baseline.epochs": Key(int, "an integer >= 0", lambda v: v >= 0),
    "baseline.lr": Key((int, float), "a number > 0", lambda v: v > 0),
    "baseline.batch_size": Key(int, "an integer >= 2", lambda v: v >= 2),
    "finetune.epochs": Key(int, "an integer >= 0", lambda v: v >= 0),
    "finetune.lr": Key((int, float), "a number > 0", lambda v: v > 0),
    "finetune.batch_size": Key(int, "an integer >= 2", lambda v: v >= 2),
    "finetune.distill": Key((int, float), "a weight in [0, 1) (0: labels only; else also learn from the baseline's outputs)",
                            lambda v: 0 <= v < 1),
    "finetune.temperature": Key((int, float), "a number > 0 (softens the baseline's outputs for distillation)",
                                lambda v: v > 0),
    "finetune.max_epochs": Key(int, "an integer >= 0 (0: every trial fine-tunes finetune.epochs)", lambda v: v >= 0),
    "train.device": Key(str, f"one of: {', '.join(TRAIN_DEVICES)} (where PyTorch trains; auto: the first CUDA GPU, else the CPU)",
                        train_device_ok),
    "train.amp": Key(str, f"one of: {', '.join(TRAIN_AMP)} (autocast while training; auto: bf16 or f16 on a GPU, off on the CPU)",
                     lambda v: v in TRAIN_AMP),
    "device.name": Key(str, "a device string such as openvino:CPU (`tune devices` lists them)", lambda v: bool(v)),
    "device.also": Key(list, "a list of other device strings to measure each trial's model on, e.g. [\"cpu\"]",
                       lambda v: all(isinstance(d, str) and d for d in v) and len(set(v)) == len(v)),
    "device.threads": Key(int, "an integer >= 0 (0: each model at its fastest count)", lambda v: v >= 0),
    "device.batch": Key(int, "an integer >= 1", lambda v: v >= 1),
    "device.latency_ci": Key((int, float), "a relative half-width in (0, 0.5]", lambda v: 0 < v <= 0.5),
    "device.latency_max_seconds": Key((int, float), "a number of seconds > 0", lambda v: v > 0),
    "device.latency_warmup_seconds": Key((int, float), "a number of seconds >= 0", lambda v: v >= 0),
    "device.throughput": Key(bool, "true or false (also measure throughput with asynchronous requests)"),
    "device.energy": Key(bool, "true or false (also measure energy per inference; on when energy is a target)"),
    "search.sparsity_max": Key((int, float), "a number in [0, 0.95] (the largest share of a width removed)",
                               lambda v: 0 <= v <= 0.95),
    "search.channel_multiple": Key(int, "an integer >= 0 (0: the device's channel granularity)", lambda v: v >= 0),
    "search.inner_width": Key(bool, "true or false (search the inner width of each layer group)"),
    "search.stream_width": Key(bool, "true or false (search the residual-stream width of each stage)"),
    "search.depth": Key(bool, "true or false (search how many blocks of each residual stage are kept)"),
    "search.recipes": Key((bool, list), "true, false or a list of recipe names to run in that order "
                          f"({', '.join(RECIPES)}) (a new study first runs these hand-made settings)",
                          lambda v: isinstance(v, bool) or (all(n in RECIPES for n in v) and len(set(v)) == len(v))),
    "search.pruners": Key(list, f"a non-empty list from: {', '.join(PRUNERS)}",
                          lambda v: bool(v) and all(p in PRUNERS for p in v)),
    "search.exclude": Key(list, "a list of regular expressions (layer names to keep unpruned)", _regex_list_ok),
    "search.groups": Key(dict, "a table of group name = [regular expressions of Conv2d names]", _groups_ok, optional=True),
    "search.precisions": Key((str, list), f'"auto" (all the device runs) or a list from: {", ".join(PRECISIONS)}',
                             _precisions_ok),
    "search.fixed_precisions": Key(dict, f"a table of group name = precision ({', '.join(PRECISIONS)})",
                                   _fixed_precisions_ok, optional=True),
    "search.quantization": Key(str, f"one of: {', '.join(QUANTIZATION)}", lambda v: v in QUANTIZATION),
    "search.collapse_margin": Key((int, float), "a multiple of chance-level Top-1 >= 1", lambda v: v >= 1),
}


def _type_name(kind) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {int: "integer", float: "number", str: "string", bool: "boolean", list: "list", dict: "table"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _validate_value(key: str, value: Any) -> Any:
    spec = KEYS[key]
    kinds = spec.kind if isinstance(spec.kind, tuple) else (spec.kind,)
    if isinstance(value, bool) and bool not in kinds:  # bool is an int in Python; not here
        ok = False
    else:
        ok = isinstance(value, kinds)
    if not ok or not spec.check(value):
        raise SpecError(f"spec key '{key}': must be {spec.allowed}, got {value!r}")
    return float(value) if float in kinds and int in kinds else value


def _flatten(table: dict, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for name, value in table.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict) and key not in KEYS:
            if not any(k.startswith(key + ".") for k in KEYS):
                raise SpecError(f"unknown spec section '{key}'; sections: {', '.join(sorted({k.split('.')[0] for k in KEYS}))}")
            flat.update(_flatten(value, key + "."))
        else:
            flat[key] = value
    return flat


@dataclass
class Spec:
    """A validated study specification (flat dotted keys, e.g. ``spec["finetune.epochs"]``)."""

    values: dict[str, Any]
    source: str

    def __getitem__(self, key: str) -> Any:
        """A declared key's value; None for an optional key the spec leaves unset (no limit, no file).
        A key not in :data:`KEYS` is a mistake in the code: KeyError, not None."""
        if key not in KEYS:
            raise KeyError(f"{key!r} is not a spec key (searcher/spec.py KEYS)")
        return self.values.get(key)

    @property
    def targets(self) -> list[str]:
        return list(self.values["study.targets"])

    @property
    def directions(self) -> list[str]:
        return [target_direction(t) for t in self.targets]

    @property
    def sampler(self) -> str:
        return self.sampler_choice()[0]

    def sampler_choice(self) -> tuple[str, str]:
        """The sampler this study runs, and why (recorded on the study as ``sampler``)."""
        choice = self.values["study.sampler"]
        if choice != "auto":
            return choice, "named in the spec"
        return "tpe", AUTO_SAMPLER_REASON

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self.values)


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` with a TOML value (bare words are strings): ``finetune.epochs=3``."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep:
        raise SpecError(f"override {text!r}: expected key=value")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    known = KEYS.get(key)
    if known and isinstance(value, str) and list in (known.kind if isinstance(known.kind, tuple) else (known.kind,)) \
            and not known.check(value):  # a list key given one item: search.pruners=l1 is ["l1"]
        value = [value]
    return key, value


def stored_spec(values: dict[str, Any], overrides: dict[str, Any] | None = None) -> Spec:
    """The spec a study was started with (its ``spec`` attribute), completed with today's defaults."""
    known = {k: v for k, v in values.items() if k in KEYS}
    return load_spec(None, {**known, **(overrides or {})})


def unknown_key_message(key: str) -> str:
    """The closest keys (``did you mean``); else the keys of its section, else the sections."""
    import difflib

    section, _, name = key.rpartition(".")
    sections = sorted({k.partition(".")[0] for k in KEYS})
    same = [k for k in KEYS if k.startswith(section + ".")] if section in sections else list(KEYS)  # a bare name: any
    names = {}
    for k in same:
        names.setdefault(k.partition(".")[2], []).append(k)
    close = [k for n in difflib.get_close_matches(name, names, n=3, cutoff=0.7) for k in names[n]][:3]
    if close:
        return f"unknown spec key '{key}'; did you mean {' or '.join(repr(k) for k in close)}?"
    if section in sections:
        return f"unknown spec key '{key}'; keys of [{section}]: {', '.join(k.partition('.')[2] for k in same)}"
    return (f"unknown spec key '{key}'; a key is SECTION.NAME, sections: {', '.join(sections)} "
            "(studies/default.toml lists every key)")


def default_study_name(model: str, data: str, data_dir: str | None = None) -> str:
    """``MODEL-DATA`` (``resnet56-digits``): another model or data set is another study, not a clash with
    the last one. Your own model ``nets/mynet.py:build`` reads ``mynet.build``; an image folder, its name."""
    if ":" in model:
        module, _, factory = model.rpartition(":")
        model = f"{Path(module).stem if module.endswith('.py') else module.rpartition('.')[2]}.{factory}"
    if data == "imagefolder" and data_dir:
        data = Path(data_dir).expanduser().resolve().name or data
    return f"{model}-{data}"


def default_spec_text() -> str:
    return resources.files("edgetune.studies").joinpath("default.toml").read_text()


def load_spec(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Spec:
    """Read the TOML file (default: the embedded studies/default.toml), apply overrides, validate."""
    defaults = _flatten(tomllib.loads(default_spec_text()))
    defaults["study.storage"] = default_storage()  # $EDGETUNE_STORAGE keeps credentials out of files
    if path is None:
        values, source = dict(defaults), "studies/default.toml"
    else:
        path = Path(path)
        if not path.is_file():
            raise SpecError(f"spec file {path} does not exist")
        try:
            text = path.read_text()
            values = {**defaults, **_flatten(tomllib.loads(text))}
        except tomllib.TOMLDecodeError as error:
            raise SpecError(f"spec file {path} is not valid TOML: {error}") from None
        except UnicodeDecodeError:
            raise SpecError(f"spec file {path} is not a text file") from None
        source = str(path)
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = value
    unknown = sorted(k for k in values if k not in KEYS)
    if unknown:
        raise SpecError(unknown_key_message(unknown[0]))
    for key, spec in KEYS.items():
        if key not in values or values[key] is None:
            if not spec.optional:
                raise SpecError(f"spec key '{key}' is missing: must be {spec.allowed}")
            values.pop(key, None)
            continue
        values[key] = _validate_value(key, values[key])
    values.setdefault("study.name", default_study_name(values["model.name"], values["data.name"], values.get("data.dir")))
    if values["device.name"] in values["device.also"]:
        raise SpecError(f"spec key 'device.also': lists the main device {values['device.name']!r}; name the others only")
    for target in values["study.targets"]:
        device = target.partition(ON_DEVICE)[2]
        if device and device not in values["device.also"]:
            raise SpecError(f"target {target!r}: device {device!r} is not in device.also "
                            f"({', '.join(values['device.also']) or 'empty'}); add it there")
    if values["study.grace_period"] <= values["study.heartbeat_interval"]:
        raise SpecError(f"spec key 'study.grace_period': must be longer than study.heartbeat_interval "
                        f"({values['study.heartbeat_interval']} s), got {values['study.grace_period']}")
    if values["data.in_memory"] is False and values["data.name"] != "imagefolder":
        raise SpecError(f"spec key 'data.in_memory': only an image folder streams; {values['data.name']!r} is always "
                        'held in memory (set it to "auto" or true)')
    if values["data.name"] == "imagefolder" and "data.dir" not in values:
        raise SpecError("spec key 'data.dir' is missing: data set 'imagefolder' needs a directory with train/ and val/")
    return Spec(values, source)
