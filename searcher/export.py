"""``tune export``: the deployable files of chosen trials, with a manifest a user can trust.

For each trial: ``deployed/`` (OpenVINO IR, ONNX for ONNX Runtime, or TorchScript, as measured), ``model.onnx``,
``weights.safetensors`` + ``widths.json``, and ``manifest.json`` with the trial's parameters,
every recorded metric, the device facts, the input normalisation, library versions and the
SHA-256 of each file.
"""
from __future__ import annotations

import json
import shutil
from importlib import metadata
from pathlib import Path

import optuna

from . import artifacts, record
from .pareto import FrontRow, front, within_top1_drop

LIBRARIES = ("edgetune", "torch", "torchvision", "nni", "optuna", "openvino", "nncf", "onnx", "onnxruntime")


class ExportError(ValueError):
    """Trials that cannot be exported (unknown number, not complete, artifact missing)."""


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def choose_trials(study: optuna.Study, numbers: list[int] | None, pareto: bool,
                  max_top1_drop: float | None = None) -> tuple[list[optuna.trial.FrozenTrial], list[FrontRow]]:
    """The trials to export: the front's (``pareto``) and those ``numbers`` name, each once; and the
    front's rows left out for losing more than ``max_top1_drop`` Top-1 points (a trial named with
    ``--trial`` is exported as asked)."""
    if not pareto and not numbers:
        raise ExportError("choose trials: --pareto or --trial N (repeatable)")
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    chosen, left_out = [], []
    for number in numbers or []:
        trial = trials.get(number)
        if trial is None:
            raise ExportError(f"study '{study.study_name}' has no trial {number}")
        if trial.state != optuna.trial.TrialState.COMPLETE or "artifact_id" not in trial.user_attrs:
            raise ExportError(f"trial {number} is {trial.state.name.lower()}: only complete trials have a model")
        chosen.append(trial)
    if pareto:
        rows = front(study)
        if not rows:
            raise ExportError(f"study '{study.study_name}' has no complete trial yet")
        kept, left_out = within_top1_drop(study, rows, max_top1_drop)
        if not kept and not chosen:
            raise ExportError(f"every model on the front of '{study.study_name}' loses more than {max_top1_drop:g} "
                              "Top-1 points; raise --max-top1-drop, or name one with --trial N")
        on_front = {row.number for row in kept}
        named = {t.number for t in chosen}
        chosen = [trials[row.number] for row in kept] + [t for t in chosen if t.number not in on_front]
        left_out = [row for row in left_out if row.number not in named]
    return chosen, left_out


def export_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial, artifacts_dir: str, out: Path) -> Path:
    folder = out / f"trial-{trial.number}"
    if folder.exists():
        shutil.rmtree(folder)
    try:
        artifacts.fetch(artifacts_dir, trial.user_attrs["artifact_id"], folder, trial.user_attrs.get("artifact_sha256"))
    except artifacts.ArtifactError as error:
        raise ExportError(f"trial {trial.number}: {error}") from None
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    attrs = dict(trial.user_attrs)
    manifest = {
        "study": study.study_name,
        "trial": trial.number,
        "values": dict(zip(study.metric_names or [], trial.values)),
        "params": trial.params,
        "metrics": {k: v for k, v in attrs.items() if k not in ("device", "seconds")},
        "device": attrs.get("device"),
        "seconds": attrs.get("seconds"),
        "baseline": {**{k: v for k, v in record.baseline(study).items() if k != "device"},
                     "source": record.baseline_source(study)},
        "input": record.data_info(study),
        "libraries": library_versions(),
        "files": {str(p.relative_to(folder)): {"sha256": artifacts.sha256(p), "bytes": p.stat().st_size} for p in files},
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
    return folder


def verify(folder: Path) -> list[str]:
    """Files whose checksum does not match the manifest (empty when all match)."""
    manifest = json.loads((folder / "manifest.json").read_text())
    return [name for name, entry in manifest["files"].items()
            if not (folder / name).is_file() or artifacts.sha256(folder / name) != entry["sha256"]]
