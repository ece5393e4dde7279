"""``remote:http://host:port/openvino:NPU``: a device served by ``tune device-agent`` on another host.

The model travels as ONNX (exported here, with module paths in node names), int8 layer groups as
node-name prefixes, calibration images and evaluation batches as .npy arrays without pickles.
Latency, device facts and predictions come back as the local adapters give them.
"""
from __future__ import annotations

import io
import json
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path
from typing import Mapping

import numpy as np

from .base import Deployment, Device, DeviceError, DeviceInfo, PrecisionPlan, ReadBackLayers
from .protocol import LatencyStats

TOKEN_ENV = "EDGETUNE_AGENT_TOKEN"


class _Client:
    def __init__(self, base_url: str, token: str, timeout: float = 600):
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def call(self, method: str, path: str, data: bytes | None = None, **query) -> bytes:
        url = f"{self.base_url}{path}"
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        request = urllib.request.Request(url, data=data, method=method,
                                         headers={"Authorization": f"Bearer {self.token}",
                                                  "Content-Type": "application/octet-stream"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.read()
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")
            try:
                detail = json.loads(detail).get("detail", detail)
            except ValueError:
                pass
            raise DeviceError(f"device agent {self.base_url} answered {error.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as error:
            raise DeviceError(f"device agent {self.base_url} cannot be reached: {getattr(error, 'reason', error)}") from None

    def json(self, method: str, path: str, data: bytes | None = None, **query) -> dict:
        return json.loads(self.call(method, path, data, **query))

    def array(self, values: np.ndarray) -> str:
        out = io.BytesIO()
        np.save(out, np.ascontiguousarray(values, dtype=np.float32), allow_pickle=False)
        return self.json("POST", "/arrays", out.getvalue())["id"]


class RemoteDeployment(ReadBackLayers, Deployment):
    def __init__(self, client: _Client, record: dict, scopes: dict[str, str], batch: int, measures_memory: bool = False):
        self._client = client
        self._measures_memory = measures_memory  # the agent's device does (older agents: no)
        self.id = record["id"]
        self._size = record["size_bytes"]
        self._weights = record["weights_bytes"]
        self.precision_used = record["precision_used"]
        self.inference_precision = record["inference_precision"]
        self.threads = record["threads"]
        self.runtime = record.get("runtime", "")  # agents before 2026-12 did not say
        self.runtime_fallback = record.get("runtime_fallback")
        self.layers = [tuple(layer) for layer in record["layers"]]
        self.scopes = scopes
        self.batch = batch

    def predict(self, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
        outputs = []
        for start in range(0, len(images), batch_size):
            array_id = self._client.array(images[start : start + batch_size])
            data = self._client.call("POST", f"/deployments/{self.id}/predict", array=array_id)
            outputs.append(np.load(io.BytesIO(data), allow_pickle=False))
        return np.concatenate(outputs)

    def runner(self, threads: int | None = None):
        raise NotImplementedError("a remote deployment is timed on its agent")

    def measure_latency(self, reference: "Deployment | None" = None,
                        reference_ms: Mapping[int, tuple[float, float]] | None = None) -> LatencyStats:
        """Timed on the agent, which keeps the fastest thread count there (``threads`` follows it)."""
        reference_id = reference.id if isinstance(reference, RemoteDeployment) else None
        known = json.dumps(reference_ms) if reference_ms else None
        stats = LatencyStats.from_dict(self._client.json("POST", f"/deployments/{self.id}/latency",
                                                         reference=reference_id, reference_ms=known))
        self.threads = stats.threads if stats.threads is not None else self.threads
        return stats

    def _measure_memory(self) -> int | None:
        """The agent's adapter's figure (see its ``memory_bytes``)."""
        if not self._measures_memory:
            return None
        return self._client.json("POST", f"/deployments/{self.id}/memory")["memory_bytes"]

    def save(self, directory: Path) -> list[Path]:
        directory.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(io.BytesIO(self._client.call("GET", f"/deployments/{self.id}/files"))) as zf:
            zf.extractall(directory)
            return [directory / name for name in zf.namelist()]

    @property
    def size_bytes(self) -> int:
        return self._size

    @property
    def weights_bytes(self) -> int:
        return self._weights

    def close(self) -> None:
        try:
            self._client.call("DELETE", f"/deployments/{self.id}")
        except DeviceError:
            pass  # the agent went away; nothing left to free


class RemoteDevice(Device):
    """A device behind ``tune device-agent``; the token comes from ``$EDGETUNE_AGENT_TOKEN``."""

    def __init__(self, url: str, token: str | None = None, batch: int = 1, **_ignored):
        base, _, device = url.rpartition("/")
        if not base.startswith(("http://", "https://")) or not device:
            raise DeviceError(f"remote device {url!r}: expected remote:http://host:port/DEVICE, e.g. "
                              "remote:http://10.0.0.5:8765/openvino:NPU")
        token = token or os.environ.get(TOKEN_ENV, "")
        if not token:
            raise DeviceError(f"remote device {url!r} needs the agent's token in ${TOKEN_ENV}")
        self._client = _Client(base, token)
        self.batch = batch
        record = self._client.json("GET", "/info")
        if record["name"] != device:
            raise DeviceError(f"the agent at {base} serves {record['name']}, not {device}")
        self._info = DeviceInfo(f"remote:{base}/{record['name']}", record["full_name"], record["runtime"],
                                record["threads"], tuple(record["precisions"]),
                                {**record.get("extra", {}), "agent": base}, record.get("channel_granularity", {}),
                                record.get("measures_memory", False))

    def info(self) -> DeviceInfo:
        return self._info

    def deploy(self, model, example_input, plan: PrecisionPlan = PrecisionPlan()) -> RemoteDeployment:
        from .onnx_export import export_onnx, module_scopes  # torch: not on an agent's board, which imports this module

        self.check_plan(plan)
        scopes = module_scopes(model)
        calibration = self._client.array(plan.calibration) if plan.int8_modules else None
        with tempfile.TemporaryDirectory() as tmp:
            data = export_onnx(model, example_input, Path(tmp) / "model.onnx").read_bytes()
        record = self._client.json("POST", "/deployments", data,
                                   input_shape=",".join(str(v) for v in example_input.shape[1:]),
                                   float_precision=plan.float_precision,
                                   int8=",".join(scopes[m] for m in plan.int8_modules), calibration=calibration)
        return RemoteDeployment(self._client, record, scopes, self.batch, self._info.measures_memory)
