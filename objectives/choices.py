"""The names the objectives accept, owned here and importable without torch: the spec validates
against them before anything heavy is loaded, and the modules that use them check them again."""

#: NNI pruners by spec name (see objectives.prune)
PRUNERS = ("l1", "l2", "fpgm")
#: data sets by spec name (see objectives.data)
DATASETS = ("digits", "cifar10", "imagefolder")
