"""The names the objectives accept, owned here and importable without torch: the spec validates
against them before anything heavy is loaded, and the modules that use them check them again."""

#: NNI pruners by spec name (see objectives.prune)
PRUNERS = ("l1", "l2", "fpgm")
#: data sets by spec name (see objectives.data)
DATASETS = ("digits", "cifar10", "imagefolder")
#: ``train.device`` and ``train.amp`` (see objectives.accelerator)
TRAIN_DEVICES = ("auto", "cpu", "cuda", "cuda:N")
TRAIN_AMP = ("auto", "bf16", "f16", "off")


def train_device_ok(value) -> bool:
    """The spelling of ``train.device`` (whether the host has it is objectives.accelerator.resolve's question)."""
    import re

    return isinstance(value, str) and re.fullmatch(r"auto|cpu|cuda(:\d+)?", value) is not None
