"""A trial's files in Optuna's artifact store: one zip per trial (and one for the baseline).

Layout of the zip: ``deployed/`` (what runs on the device: OpenVINO IR or TorchScript),
``model.onnx`` (the float model), ``weights.safetensors`` + ``widths.json`` (the PyTorch model),
``predictions.npy`` (the deployed model's class for each validation image).
"""
from __future__ import annotations

import hashlib
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import optuna

from edgetune.objectives.data import Splits
from edgetune.objectives.model_files import write_model_files
from edgetune.objectives.pipeline import TrialOutcome

from .spec import Spec
from .storage import AtomicArtifactStore, artifact_store


class ArtifactError(RuntimeError):
    """An artifact is missing from the store or does not match its recorded checksum."""


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


#: Members written uncompressed: weights and arrays (docs/benchmarks/trial-cost.md: a ResNet-56's
#: artifact, 10.7 MB, deflates to 9.6 MB in 1.1 s against 0.09 s stored); text (the IR's .xml) is deflated.
_STORED = {".bin", ".onnx", ".safetensors", ".pt", ".npy"}


def pack_outcome(outcome: TrialOutcome, spec: Spec, data: Splits, name: str, into: Path) -> Path:
    """Zip the outcome's files into ``into/<name>.zip`` (no storage is touched)."""
    folder = into / name
    outcome.deployment.save(folder / "deployed")
    write_model_files(outcome.model, spec["model.name"], data.num_classes, data.example_input(2), folder)
    np.save(folder / "predictions.npy", outcome.predictions)
    archive = into / f"{name}.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                stored = path.suffix in _STORED  # float weights deflate by about 10% at 12x the time of a copy
                zf.write(path, path.relative_to(folder), zipfile.ZIP_STORED if stored else None)
    shutil.rmtree(folder)
    return archive


def upload(study_or_trial, archive: Path, artifacts_dir: str) -> dict[str, str]:
    """Store the zip next to the trial (or study); the attributes that find and check it later."""
    artifact_id = optuna.artifacts.upload_artifact(artifact_store=artifact_store(artifacts_dir), file_path=str(archive),
                                                   study_or_trial=study_or_trial, mimetype="application/zip")
    return {"artifact_id": artifact_id, "artifact_sha256": sha256(archive)}


def store_outcome(study_or_trial, outcome: TrialOutcome, spec: Spec, data: Splits, name: str) -> dict[str, str]:
    with tempfile.TemporaryDirectory() as tmp:
        return upload(study_or_trial, pack_outcome(outcome, spec, data, name, Path(tmp)), spec["study.artifacts"])


def fetch(artifacts_dir: str, artifact_id: str, destination: Path, expected_sha256: str | None = None) -> Path:
    """Download, check and unpack an artifact zip into ``destination`` (made only once the zip is good;
    a store that is not there is an error, not an empty new one)."""
    if not Path(artifacts_dir).is_dir():
        raise ArtifactError(f"artifact store {Path(artifacts_dir).absolute()} is not there; name it with --artifacts DIR")
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "artifact.zip"
        try:
            optuna.artifacts.download_artifact(artifact_store=AtomicArtifactStore(artifacts_dir), file_path=str(archive),
                                               artifact_id=artifact_id)
        except Exception as error:  # noqa: BLE001 - the store's own error types differ by backend
            raise ArtifactError(f"artifact {artifact_id} cannot be read from {artifacts_dir}: {error}") from None
        if expected_sha256 and sha256(archive) != expected_sha256:
            raise ArtifactError(f"artifact {artifact_id} in {artifacts_dir} does not match its recorded SHA-256")
        destination.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(destination)
    return destination


def predictions(artifacts_dir: str, artifact_id: str) -> np.ndarray:
    with tempfile.TemporaryDirectory() as tmp:
        folder = fetch(artifacts_dir, artifact_id, Path(tmp))
        return np.load(folder / "predictions.npy")
