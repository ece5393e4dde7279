"""A trial's record: the Optuna user attributes every finished trial carries. This module is its one
definition; the README and docs/ARCHITECTURE.md link here, and the tests check real records against it.

The record is built in steps: :mod:`objectives.pipeline` measures the deployed model and adds what the
trial realized; :mod:`searcher.trial` adds the store's time, the artifact and the failure of a trial
that did not complete; the worker adds ``worker``. The study's baseline is recorded under the same
names (the measurement's fields, ``artifact_id``, ``artifact_sha256``, the further devices' ones),
prefixed ``baseline_`` (:mod:`searcher.record`; the study's own ``baseline_source`` shares the prefix but is
not part of the record: ``record.baseline`` leaves it out, ``record.baseline_source`` reads it).

``total=False``: a record in the making type-checks, a key outside the contract does not. ``Always[T]``
marks the fields every complete trial has (:data:`ALWAYS`); the comment says when the others are there.
A further device's fields are named ``<field>@<device>`` (:func:`at`, :data:`OTHER_DEVICE`), which a
TypedDict cannot declare. The stored keys and values are what studies already hold: rename none.
A benchmark may add a key of its own to the trials it enqueues (bench/miss_reruns.py: ``rerun_of``).
"""
from typing import Annotated, Any, TypedDict, TypeVar, get_type_hints

T = TypeVar("T")
_ALWAYS = "on every complete trial"
Always = Annotated[T, _ALWAYS]

#: The phases a trial's time is recorded under (``seconds``), in the order they run.
PHASES = (
    "prune",  # choose the blocks, streams and channels to remove; not on tune finalize's trials
    "speedup",  # remove them (NNI ModelSpeedup or Torch-Pruning); not on tune finalize's trials
    "screen",  # with a latency limit only: the pruned model timed before fine-tuning
    "fine_tune",  # on the training device (spec [train]); quantization-aware for int8 groups
    "deploy",  # onto the device at the precision plan (and onto each further device)
    "evaluate",  # Top-1 and Top-5 on the deployed model
    "measure",  # latency by the protocol (and throughput, and on each further device)
    "memory",  # inference memory, in a child process (None where the device cannot tell)
    "energy",  # with device.energy or an energy target only
    "store",  # the searcher zips the deployment and the model (searcher.trial.Objective.result_of)
)


class TrialRecord(TypedDict, total=False):
    # -- the deployed model measured on the device (objectives.pipeline.deploy_and_measure; the baseline too) --
    latency_ms: Always[float]  # ms, median of batch-1 inferences, on the baseline's scale: its recorded latency x latency_vs_baseline
    latency_p90_ms: Always[float]  # ms, 90th percentile, corrected for latency_drift
    latency_mean_ms: Always[float]  # ms, mean, corrected for latency_drift
    latency_ci95_rel: Always[float]  # relative half-width of the 95% interval of the median (of the paired ratio)
    latency_runs: Always[int]  # timed inferences
    latency_converged: Always[bool]  # the interval reached device.latency_ci before the time limit
    latency_raw_ms: Always[float]  # ms, the model's own median, not put on the baseline's scale
    latency_vs_baseline: Always[float | None]  # the paired ratio of medians, model / baseline; None for the baseline
    latency_drift: Always[float]  # the baseline's median now / its recorded one (1.0 unpaired): the host's drift
    latency_device_ms: Always[float | None]  # ms, time on the device alone (OpenVINO counters, CUDA events); None where unknown
    throughput_fps: Always[float | None]  # images/s with asynchronous requests (device.throughput); else None
    top1: Always[float]  # %, validation Top-1 of the deployed model (also on a collapsed trial, from fine-tuning's check)
    top5: Always[float]  # %, validation Top-5 of the deployed model
    class_top1: Always[list[float]]  # %, Top-1 per class in class order (NaN for a class absent from validation)
    params: Always[int]  # parameters of the PyTorch model
    flops: Always[int]  # multiply-accumulates per image of conv and linear layers (NNI's counter)
    size_bytes: Always[int]  # bytes, the deployed files on disk
    weights_bytes: Always[int]  # bytes, their weights alone (OpenVINO IR: the .bin)
    memory_bytes: Always[int | None]  # bytes, inference memory (devices.base.Deployment.memory_bytes); None where unknown
    energy_mj: Always[float | None]  # mJ per inference of one batch, idle draw included (device.energy); else None
    energy: Always[dict | None]  # devices.energy.EnergyStats as a dict (idle power, window, counter); else None
    runtime: Always[str]  # what executed the model: openvino, onnxruntime, cuda-graph, torchscript, eager
    runtime_fallback: Always[str | None]  # why not the adapter's preferred runtime; None when it ran
    precision_plan: Always[dict[str, str]]  # group (and "other") -> precision asked for; {"*": p} on the baseline
    precision_used: Always[dict[str, int]]  # precision -> compute layers running in it, read from the compiled model
    device: Always[dict[str, Any]]  # devices.base.DeviceInfo.to_dict(), plus inference_precision and threads_used
    seconds: Always[dict[str, float]]  # s per phase: keys from PHASES, those that ran
    # the baseline (and older studies' trials) with device.threads = 0: thread count -> [median ms on
    # one scale, its ratio's interval]
    latency_by_threads: dict[str, list[float]]

    # -- what the trial realized (objectives.pipeline.fine_tune_and_measure and run_trial) --
    sparsity_achieved: Always[dict[str, float]]  # group -> share of its channels removed (0-1)
    channels: Always[dict[str, int]]  # pruned layer -> output channels kept
    inner_width: Always[dict[str, int]]  # group -> channels of its widest layer
    depth: dict[str, int]  # stage -> blocks kept; on a model with residual stages
    stream_width: dict[str, int]  # stage -> channels of its residual stream; on a model with residual stages
    blocks_removed: list[str]  # module paths of the blocks removed; on a model with residual stages
    channel_multiple: Always[int]  # every searched width is a whole multiple of it
    pruner: Always[str]  # NNI pruner that chose the channels: l1, l2, fpgm, ...
    prune_engine: str | None  # what removed the inner channels: nni, torch-pruning; None: none; not on finalize's
    fine_tune_epochs: Always[int]  # epochs fine-tuned (finetune.epochs scaled up to finetune.max_epochs)
    distill: Always[float]  # weight of the distillation loss from the baseline's logits (0: none)
    train_device: Always[str]  # where it fine-tuned: cpu, cuda:0, ...
    train_amp: Always[str]  # autocast precision while fine-tuning (bf16, fp16), or off
    quantization: Always[str | None]  # route of the int8 groups: qat, qat-qdq, ptq; None without int8
    calibration_size: Always[int]  # images the device calibrated int8 with (0: none, or QAT's scales used)
    precision_used_by_group: Always[dict[str, dict[str, int]]]  # group (and "other") -> precision -> compute layers
    latency_untrained_ms: float  # ms, the screen's timing before fine-tuning; with a latency limit

    # -- written by the searcher --
    artifact_id: Always[str]  # the zipped deployment and model in Optuna's artifact store (also the baseline)
    artifact_sha256: Always[str]  # its SHA-256, checked on export and finalize
    worker: str  # host:pid of the worker that ran it; not on tune finalize's trials
    seeded: str  # the recipe an enqueued trial ran (searcher.recipes)
    finalized_from: int  # trial number a tune finalize trial fine-tuned longer

    # -- a trial that did not complete --
    failure: str  # one line: why it failed or was pruned
    finetune_skipped: str  # "latency": pruned by the screen, too slow before fine-tuning
    latency_limit_ms: float  # ms, the limit a screened trial missed
    interrupted: bool  # stopped by the user: its budget goes back


#: The fields a further device (spec ``device.also``) records, each named ``<field>@<device>``.
OTHER_DEVICE = ("latency_ms", "latency_ci95_rel", "latency_raw_ms", "inference_precision", "latency_by_threads")

_HINTS = get_type_hints(TrialRecord, include_extras=True)
FIELDS = frozenset(_HINTS)
ALWAYS = frozenset(k for k, hint in _HINTS.items() if _ALWAYS in getattr(hint, "__metadata__", ()))


def at(field: str, device: str) -> str:
    """The name of a further device's field.

    >>> at("latency_ms", "cpu")
    'latency_ms@cpu'
    """
    if field not in OTHER_DEVICE:
        raise KeyError(f"{field!r} is not a further device's field (trial_record.OTHER_DEVICE)")
    return f"{field}@{device}"


def unknown_keys(record: dict) -> list[str]:
    """Keys the contract does not declare: a key added without its line above (tests call it on real records).

    >>> unknown_keys({"latency_ms": 1.2, "latency_ms@cpu": 3.4, "latncy_ms": 1.2, "inference_precision": "f32"})
    ['latncy_ms', 'inference_precision']
    """
    return [k for k in record if k not in FIELDS and not ("@" in k and k.partition("@")[0] in OTHER_DEVICE)]
