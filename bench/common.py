"""What several benchmarks share: their command-line set-up, how a long run stops, and the task settings
that more than one script runs with."""
from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The CIFAR task of the search and distillation benchmarks: ResNet-20 on the shared cifar10-12k folder.
CIFAR = {"model.name": "resnet20", "data.name": "imagefolder",
         "data.dir": str(ROOT.parent / "shared" / "data" / "cifar10-12k"), "baseline.epochs": 15, "baseline.lr": 0.05}
DISTILL = {"finetune.distill": 0.9, "finetune.temperature": 4.0}  # the distilled fine-tune's setting (the default)


def parser(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser whose help is the script's docstring, laid out as written. Every script's
    entry point builds one, so the libraries' chatter is quieted here, as `tune` does."""
    from edgetune.searcher.log_setup import quiet_libraries

    quiet_libraries()
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def training_threads(threads: int) -> None:
    """PyTorch's thread count (0: its default), so two benchmarks can run side by side, one core each."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def spec_overrides(items: list[str]) -> dict:
    """``--set KEY=VALUE`` items as spec overrides, parsed as ``tune --set`` parses them."""
    from edgetune.searcher.spec import parse_override

    return dict(parse_override(item) for item in items)


def stop_on_sigterm(signum=None, frame=None):
    """A SIGTERM handler: stop as Ctrl-C does (the running trial fails cleanly, a rerun resumes)."""
    raise KeyboardInterrupt


def stop_like_ctrl_c() -> None:
    """As ``tune start``: SIGTERM stops the benchmark like Ctrl-C, failing the running trial cleanly for a resume."""
    signal.signal(signal.SIGTERM, stop_on_sigterm)


def cached_resnet56_digits():
    """The cached ResNet-56 digits baseline (eval mode), or exit with the command that makes it."""
    import torch

    from edgetune.objectives.cache import cache_dir
    from edgetune.objectives.models import create_model

    checkpoints = sorted(cache_dir().glob("baselines/resnet56-digits-*.pt"))
    if not checkpoints:
        sys.exit("no cached ResNet-56 digits baseline: run `tune start --trials 1` first")
    model = create_model("resnet56", 10).eval()
    model.load_state_dict(torch.load(checkpoints[0], weights_only=True))
    return model


def probe_target(device, deployment, folder: Path) -> tuple[Path, dict | None]:
    """What the memory probe reads for ``deployment``, through public API: its model file as ``save`` writes it
    into ``folder`` (IR, ONNX or TorchScript) and, where the device compiles with options (OpenVINO), those."""
    path = next(p for p in deployment.save(folder) if p.suffix in (".xml", ".onnx", ".pt"))
    config = device.compile_config(deployment.inference_precision) if hasattr(device, "compile_config") else None
    return path, config


def pruned_inner(model, sparsity: float, example):
    """``model`` (changed in place, eval mode) with ``sparsity`` of every layer group's inner width removed,
    as a trial's ``inner`` parameters would (l1; residual streams and blocks kept)."""
    from edgetune.objectives import prune
    from edgetune.objectives.groups import derive_groups

    model.eval()
    if not sparsity:
        return model
    groups = derive_groups(model)
    widths = prune.group_widths(prune.out_channels(model, groups), groups)
    keep = prune.kept_channels(model, groups, {g: prune.aligned(w, 1 - sparsity, 1) for g, w in widths.items()})
    masks = prune.compute_masks(model, prune.config_list(model, groups, keep, example), "l1")
    if masks:
        prune.remove_channels(model, masks, example)
    return model
