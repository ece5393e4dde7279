"""A trial's files in Optuna's artifact store: one zip per trial (and one for the baseline).

Layout of the zip: ``deployed/`` (what runs on the device: OpenVINO IR or TorchScript),
``model.onnx`` (the float model), ``weights.safetensors`` + ``widths.json`` (the PyTorch model),
``predictions.npy`` (the deployed model's class for each validation image).
"""
from __future__ import annotations

import tempfile
import zipfile
from pathlib import Path

import numpy as np
import optuna

from objectives.data import DataSplits
from objectives.export import write_model_files
from objectives.pipeline import TrialOutcome

from .spec import Spec
from .storage import artifact_store


def store_outcome(study_or_trial, outcome: TrialOutcome, spec: Spec, data: DataSplits, name: str) -> str:
    """Zip the outcome's files, upload them next to the trial (or study); returns the artifact id."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / name
        outcome.deployment.save(folder / "deployed")
        write_model_files(outcome.model, spec["model.name"], data.num_classes, data.example_input(2), folder)
        np.save(folder / "predictions.npy", outcome.predictions)
        archive = Path(tmp) / f"{name}.zip"
        partial = archive.with_suffix(".partial")
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    zf.write(path, path.relative_to(folder))
        partial.replace(archive)
        return optuna.artifacts.upload_artifact(artifact_store=artifact_store(spec["study.artifacts"]),
                                                file_path=str(archive), study_or_trial=study_or_trial,
                                                mimetype="application/zip")


def fetch(artifacts_dir: str, artifact_id: str, destination: Path) -> Path:
    """Download and unpack an artifact zip into ``destination``."""
    destination.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "artifact.zip"
        optuna.artifacts.download_artifact(artifact_store=artifact_store(artifacts_dir), file_path=str(archive),
                                           artifact_id=artifact_id)
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(destination)
    return destination


def predictions(artifacts_dir: str, artifact_id: str) -> np.ndarray:
    with tempfile.TemporaryDirectory() as tmp:
        folder = fetch(artifacts_dir, artifact_id, Path(tmp))
        return np.load(folder / "predictions.npy")
