"""Importing edgetune changes no global logging or warnings set-up: that is the entry points' job
(searcher/log_setup.py, called by the command line). A library user's own logging stays theirs.

Run in a fresh interpreter: the libraries edgetune imports at module level (torch, NNI, Optuna, ...) are
imported first, since what they do on import is not edgetune's; then every edgetune module.
"""
import json
import subprocess
import sys

from tests.test_imports import PACKAGES, _modules

SCRIPT = r"""
import ast, importlib, json, logging, sys, warnings

modules, sources = json.loads(sys.argv[1]), json.loads(sys.argv[2])


def third_party(source):
    for node in ast.walk(ast.parse(open(source).read())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            yield node.module


for name in sorted({n for s in sources for n in third_party(s) if not n.startswith("edgetune")}):
    try:
        importlib.import_module(name)
    except ImportError:  # an optional library (a lazy import in a function that is not installed)
        pass


def state():
    loggers = {"": logging.root, **{n: l for n, l in logging.root.manager.loggerDict.items()
                                    if isinstance(l, logging.Logger)}}
    return ({n: (l.level, [repr(h) for h in l.handlers], [repr(f) for f in l.filters], l.propagate, l.disabled)
             for n, l in loggers.items()}, [repr(f) for f in warnings.filters], logging.root.manager.disable)


before = state()
for name in modules:
    importlib.import_module(name)
after = state()
untouched = (logging.NOTSET, [], [], True, False)  # a logger that only getLogger made
changed = {n: [before[0].get(n, untouched), a] for n, a in after[0].items() if a != before[0].get(n, untouched)}
print(json.dumps({"loggers": changed, "new_warning_filters": [f for f in after[1] if f not in before[1]],
                  "warning_filters_kept": before[1] == after[1][len(after[1]) - len(before[1]):],
                  "disable": [before[2], after[2]]}))
"""


def test_importing_every_module_leaves_logging_and_warnings_as_they_were():
    modules = _modules()
    names = [f"edgetune.{name}" for name in sorted(modules)]
    sources = [str(modules[name]) for name in sorted(modules)]
    assert len(names) > 40 and all(name.split(".")[1] in PACKAGES for name in names)
    done = subprocess.run([sys.executable, "-W", "default", "-c", SCRIPT, json.dumps(names), json.dumps(sources)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["loggers"] == {}, "importing edgetune changed these loggers (before, after)"
    assert found["new_warning_filters"] == [] and found["warning_filters_kept"]
    assert found["disable"][0] == found["disable"][1]


def test_an_int8_deploy_quiets_nncf_for_its_call_only(capfd):
    """NNCF's import sets its logger to INFO on stdout; the OpenVINO adapter quiets it while it quantizes
    and leaves the level as the caller had it."""
    import logging

    import numpy as np
    import torch
    from torch import nn

    from edgetune.devices import PrecisionPlan, create_device

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2, self.fc = nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3), nn.Linear(8, 4)

        def forward(self, x):
            return self.fc(torch.relu(self.conv2(torch.relu(self.conv1(x)))).mean((2, 3)))

    import nncf  # noqa: F401 - its import sets the level this test then replaces

    logging.getLogger("nncf").setLevel(logging.DEBUG)  # a library user who wants to hear NNCF elsewhere
    calibration = np.random.default_rng(0).standard_normal((8, 3, 12, 12)).astype(np.float32)
    deployment = create_device("openvino:CPU").deploy(Tiny().eval(), torch.zeros(1, 3, 12, 12),
                                                      PrecisionPlan("f32", ("conv2",), calibration))
    try:
        assert deployment.precision_of(["conv2"]) == {"int8": 1}
        assert logging.getLogger("nncf").level == logging.DEBUG
        assert "nncf" not in capfd.readouterr().out
    finally:
        deployment.close()
        logging.getLogger("nncf").setLevel(logging.INFO)
