"""The logging and warnings set-up of edgetune's entry points (the ``tune`` command line, its worker
processes): the user reads edgetune's own lines, not the libraries' chatter; errors still show.

Importing an edgetune module changes no global logging or warnings state (a test checks): a program
that uses edgetune as a library keeps its own set-up, and calls :func:`quiet_libraries` if it wants this one.
"""
from __future__ import annotations

import logging
import warnings

#: NNI's loggers that speak while edgetune prunes and quantizes (``nni.speedup``: the one objectives.prune
#: gives ModelSpeedup). Not only ``nni``: importing NNI sets that one back to INFO.
NNI_LOGGERS = ("nni", "nni.compression", "nni.common", "nni.speedup")


def quiet_libraries() -> None:
    """Silence library warnings and info logs for the rest of the process (imports nothing heavy)."""
    import optuna

    # Deprecation chatter from NNI/torch/OpenVINO is not the user's business; errors still show.
    for category in (DeprecationWarning, FutureWarning, UserWarning, optuna.exceptions.ExperimentalWarning):
        warnings.filterwarnings("ignore", category=category)
    warnings.filterwarnings("ignore", module=r"nni\..*")
    warnings.filterwarnings("ignore", message=r".*already registered as pytree node.*")
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # we report trials ourselves (rich)
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # "No CUDA runtime" on CPU hosts
    logging.getLogger("nncf").setLevel(logging.ERROR)
    for name in NNI_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
