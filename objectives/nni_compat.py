"""Two small fixes that make NNI 3.0's ``ModelSpeedup`` run on current PyTorch.

NNI 3.0 (2023) is the last release; its concrete tracer predates torch 2.14:

1. The tracer's leaf-function table is built from ``dir(torch._C._VariableFunctions)`` and
   friends. A few of those built-ins (``unique_dim``, ``_make_subclass``, ...) now have
   ``__module__ = None`` and ``concrete_trace`` dies on ``func.__module__.startswith``.
   They are never called by a CNN's forward, so dropping them from the table is safe.
2. torch.fx now calls ``Node.is_impure(impure_random)``; NNI's replacement accepts only
   ``node``. We accept and ignore the extra argument (NNI's rule does not depend on it).

``apply()`` is idempotent and runs on import of :mod:`objectives.prune`; site-packages is
never edited.
"""
from __future__ import annotations

import functools

_applied = False


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
    _applied = True


def broken_leaf_functions() -> list:
    """Leaf functions in NNI's tracer table that would crash it (empty after ``apply``)."""
    from nni.common.concrete_trace_utils import concrete_tracer

    return _broken_leaf_functions(concrete_tracer.ConcreteTracer.default_autowrap_leaf_function)
