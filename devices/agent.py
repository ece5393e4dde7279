"""``tune device-agent``: serve one device over HTTP so studies on other hosts can measure on it.

The original study measured on a Neural Compute Stick attached to another host, because the
training and benchmarking toolchains conflicted. The agent accepts **only ONNX** (a protobuf,
parsed without running code; never a pickle), requires a shared token, binds to 127.0.0.1 unless
told otherwise, limits upload size, and serialises measurements so that several training workers
sharing one device do not disturb each other's timings.

    POST   /deployments                 body: ONNX bytes; query: input_shape, float_precision, int8
                                        (node-name prefixes, comma-separated), calibration (the id
                                        of an uploaded array, see /arrays; needed with int8)
    POST   /arrays                      body: .npy bytes (allow_pickle=False) -> id
    POST   /deployments/{id}/latency    query: reference (another deployment id)
    POST   /deployments/{id}/predict    query: array (an uploaded array id) -> .npy logits
    POST   /deployments/{id}/memory     -> {"memory_bytes": ...} (the adapter's figure; null if it has none)
    GET    /deployments/{id}/files      -> zip of the deployed files
    DELETE /deployments/{id}
    GET    /info

It serves OpenVINO devices and ``onnxruntime:CPU``; the latter also from the slim install on a board
without PyTorch (``agent/``, README "Devices"), whose ``tune`` is :mod:`devices.agent_cli`.
"""
from __future__ import annotations

import hmac
import io
import json
import tempfile
import threading
import uuid
import zipfile
from pathlib import Path

import numpy as np
from fastapi import Depends, FastAPI, Header, HTTPException, Request, Response

from .base import Device, DeviceError, PrecisionPlan
from .protocol import LatencyProtocol, thread_table
from .remote import TOKEN_ENV

ONNX_FIRST_BYTES = (b"\x08",)  # an ONNX ModelProto starts with field 1 (ir_version), varint


def _looks_like_pickle(data: bytes) -> bool:
    return data[:1] == b"\x80" or data[:2] == b"PK" and b"data.pkl" in data[:4096]


def create_app(device: Device, token: str, max_upload_bytes: int = 256 * 2**20):
    """The agent's FastAPI application for ``device`` (an adapter with ``deploy_onnx``)."""
    import onnx

    if not token:
        raise ValueError("the agent needs a token")
    app = FastAPI(title="edgetune device agent", docs_url=None, redoc_url=None)
    deployments: dict[str, object] = {}
    arrays: dict[str, np.ndarray] = {}
    measuring = threading.Lock()
    workdir = Path(tempfile.mkdtemp(prefix="edgetune-agent-"))

    def authorised(authorization: str = Header(default="")) -> None:
        if not hmac.compare_digest(authorization.encode(), f"Bearer {token}".encode()):
            raise HTTPException(401, "missing or wrong token")

    async def body(request: Request) -> bytes:
        declared = int(request.headers.get("content-length") or 0)
        if declared > max_upload_bytes:
            raise HTTPException(413, f"upload of {declared} bytes is over the limit of {max_upload_bytes}")
        data = b""
        async for chunk in request.stream():
            data += chunk
            if len(data) > max_upload_bytes:
                raise HTTPException(413, f"upload is over the limit of {max_upload_bytes} bytes")
        return data

    def deployment(deployment_id: str):
        if deployment_id not in deployments:
            raise HTTPException(404, f"no deployment {deployment_id}")
        return deployments[deployment_id]

    @app.get("/info", dependencies=[Depends(authorised)])
    def info():
        return device.info().to_dict()

    @app.post("/arrays", dependencies=[Depends(authorised)])
    async def upload_array(request: Request):
        data = await body(request)
        try:
            array = np.load(io.BytesIO(data), allow_pickle=False)
        except ValueError as error:
            raise HTTPException(400, f"not a .npy array without pickles: {error}") from None
        array_id = uuid.uuid4().hex
        arrays[array_id] = np.ascontiguousarray(array, dtype=np.float32)
        return {"id": array_id, "shape": list(array.shape)}

    @app.post("/deployments", dependencies=[Depends(authorised)])
    async def deploy(request: Request, input_shape: str, float_precision: str = "f32", int8: str = "",
                     calibration: str = ""):
        data = await body(request)
        if _looks_like_pickle(data) or not data.startswith(ONNX_FIRST_BYTES):
            raise HTTPException(400, "only ONNX models are accepted (this looks like a pickle or another format)")
        try:
            onnx.load_model_from_string(data)
        except Exception as error:  # noqa: BLE001 - any parse failure is the client's input
            raise HTTPException(400, f"not a valid ONNX model: {error}") from None
        prefixes = [p for p in int8.split(",") if p]
        if prefixes and calibration not in arrays:
            raise HTTPException(400, "int8 needs a calibration array (upload it to /arrays first)")
        path = workdir / f"{uuid.uuid4().hex}.onnx"
        path.write_bytes(data)
        plan = PrecisionPlan(float_precision, tuple(prefixes), arrays.get(calibration))
        try:
            with measuring:
                deployed = device.deploy_onnx(path, tuple(int(v) for v in input_shape.split(",")), plan, prefixes)
        except Exception as error:  # noqa: BLE001 - DeviceError and runtime errors go back as one line
            raise HTTPException(422, f"{type(error).__name__}: {error}") from None
        finally:
            path.unlink(missing_ok=True)
        deployment_id = uuid.uuid4().hex
        deployments[deployment_id] = deployed
        return {"id": deployment_id, "size_bytes": deployed.size_bytes, "weights_bytes": deployed.weights_bytes,
                "precision_used": deployed.precision_used, "inference_precision": deployed.inference_precision,
                "threads": getattr(deployed, "threads", 0), "layers": deployed.layers,
                "runtime": deployed.runtime, "runtime_fallback": deployed.runtime_fallback}

    @app.post("/deployments/{deployment_id}/latency", dependencies=[Depends(authorised)])
    def latency(deployment_id: str, reference: str = "", reference_ms: str = ""):
        candidate = deployment(deployment_id)
        known = thread_table(json.loads(reference_ms)) if reference_ms else None  # the reference's by_threads
        with measuring:  # one measurement at a time on this device
            stats = candidate.measure_latency(deployment(reference) if reference else None, known)
        return stats.to_dict()

    @app.post("/deployments/{deployment_id}/memory", dependencies=[Depends(authorised)])
    def memory(deployment_id: str):
        candidate = deployment(deployment_id)
        try:
            with measuring:  # the probe runs inferences: not beside a timing
                return {"memory_bytes": candidate.memory_bytes()}
        except Exception as error:  # noqa: BLE001 - DeviceError and runtime errors go back as one line
            raise HTTPException(422, f"{type(error).__name__}: {error}") from None

    @app.post("/deployments/{deployment_id}/predict", dependencies=[Depends(authorised)])
    def predict(deployment_id: str, array: str):
        if array not in arrays:
            raise HTTPException(404, f"no array {array}")
        out = io.BytesIO()
        np.save(out, deployment(deployment_id).predict(arrays.pop(array)), allow_pickle=False)
        return Response(out.getvalue(), media_type="application/octet-stream")

    @app.get("/deployments/{deployment_id}/files", dependencies=[Depends(authorised)])
    def files(deployment_id: str):
        with tempfile.TemporaryDirectory() as tmp:
            out = io.BytesIO()
            with zipfile.ZipFile(out, "w") as zf:
                for path in deployment(deployment_id).save(Path(tmp)):
                    zf.write(path, path.name)
        return Response(out.getvalue(), media_type="application/zip")

    @app.delete("/deployments/{deployment_id}", dependencies=[Depends(authorised)])
    def delete(deployment_id: str):
        removed = deployments.pop(deployment_id, None)
        if removed is not None:
            removed.close()
        return {"deleted": deployment_id}

    return app


def serve(device: str, host: str = "127.0.0.1", port: int = 8765, threads: int = 0, max_upload_mb: int = 256,
          latency_ci: float = 0.02, latency_max_seconds: float = 5.0, say=print) -> None:
    """``tune device-agent``: serve ``device`` until stopped. Bad input raises DeviceError (one line)."""
    import os

    import uvicorn

    from .registry import create_device

    token = os.environ.get(TOKEN_ENV, "")
    if not token:
        raise DeviceError(f"set ${TOKEN_ENV} to the token clients must present")
    served = create_device(device, threads=threads,
                           protocol=LatencyProtocol(target_ci_rel=latency_ci, max_seconds=latency_max_seconds))
    if not hasattr(served, "deploy_onnx"):
        raise DeviceError(f"device {device!r} cannot be served: the agent deploys ONNX, which only OpenVINO and "
                          "ONNX Runtime devices take")
    say(f"serving {served.info().name} on http://{host}:{port} (ONNX only, uploads up to {max_upload_mb} MiB)")
    uvicorn.run(create_app(served, token, max_upload_mb * 2**20), host=host, port=port, log_level="warning")
