"""Small fixes that make NNI 3.0's ``ModelSpeedup`` run on current PyTorch and Python.

NNI 3.0 (2023) is the last release; its concrete tracer predates torch 2.14:

1. The tracer's leaf-function table is built from ``dir(torch._C._VariableFunctions)`` and
   friends. A few of those built-ins (``unique_dim``, ``_make_subclass``, ...) now have
   ``__module__ = None`` and ``concrete_trace`` dies on ``func.__module__.startswith``.
   They are never called by a CNN's forward, so dropping them from the table is safe.
2. torch.fx now calls ``Node.is_impure(impure_random)``; NNI's replacement accepts only
   ``node``. We accept and ignore the extra argument (NNI's rule does not depend on it).
3. Python 3.12.0-3.12.3 (Ubuntu 24.04's system Python is 3.12.3) return a descriptor, not a tuple,
   for ``type.__type_params__`` (CPython gh-119011), so the tracer's ``functools.wraps(type)``
   raises "__type_params__ must be set to a tuple". The tracer module gets a ``functools`` whose
   ``wraps`` leaves such a value out; every other module keeps the real one.

``apply()`` is idempotent and runs on import of :mod:`objectives.prune`; site-packages is
never edited.
"""
from __future__ import annotations

import functools
import types

_applied = False


def wraps(wrapped, assigned=functools.WRAPPER_ASSIGNMENTS, updated=functools.WRAPPER_UPDATES):
    """``functools.wraps`` that leaves out a ``__type_params__`` Python itself would refuse."""
    if not isinstance(getattr(wrapped, "__type_params__", ()), tuple):
        assigned = tuple(name for name in assigned if name != "__type_params__")
    return functools.wraps(wrapped, assigned, updated)


def type_params_are_broken() -> bool:
    """True on the Pythons whose ``functools.wraps(type)`` raises (3.12.0-3.12.3)."""
    return not isinstance(getattr(type, "__type_params__", ()), tuple)


def _broken_leaf_functions(table: dict) -> list:
    return [func for func in table if callable(func) and getattr(func, "__module__", "") is None]


def apply() -> None:
    """Patch NNI's concrete tracer in memory (once per process)."""
    global _applied
    if _applied:
        return
    from nni.common.concrete_trace_utils import concrete_tracer

    table = concrete_tracer.ConcreteTracer.default_autowrap_leaf_function
    for func in _broken_leaf_functions(table):
        del table[func]

    original = concrete_tracer.node_is_impure_wrapper
    if not getattr(original, "_edgetune_compat", False):

        @functools.wraps(original)
        def node_is_impure(node, *_args, **_kwargs):
            return original(node)

        node_is_impure._edgetune_compat = True
        concrete_tracer.node_is_impure_wrapper = node_is_impure

    if type_params_are_broken():
        concrete_tracer.functools = types.SimpleNamespace(**{**vars(functools), "wraps": wraps})
    _applied = True


def broken_leaf_functions() -> list:
    """Leaf functions in NNI's tracer table that would crash it (empty after ``apply``)."""
    from nni.common.concrete_trace_utils import concrete_tracer

    return _broken_leaf_functions(concrete_tracer.ConcreteTracer.default_autowrap_leaf_function)
