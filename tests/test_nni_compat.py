import torch

from edgetune.objectives import nni_compat
from edgetune.objectives.models import create_model


def test_apply_removes_the_leaf_functions_that_crash_the_tracer():
    from nni.common.concrete_trace_utils import concrete_tracer

    table = concrete_tracer.ConcreteTracer.default_autowrap_leaf_function
    nni_compat.apply()
    assert nni_compat.broken_leaf_functions() == []
    assert len(table) > 100  # only the few broken entries went, not the table
    nni_compat.apply()  # idempotent


def test_is_impure_accepts_torch_fx_extra_argument():
    from nni.common.concrete_trace_utils import concrete_tracer

    nni_compat.apply()
    graph = torch.fx.symbolic_trace(torch.nn.Sequential(torch.nn.ReLU()))
    node = next(n for n in graph.graph.nodes if n.op == "output")
    assert concrete_tracer.node_is_impure_wrapper(node, False) is True  # torch.fx passes impure_random


def test_concrete_trace_and_speedup_work_on_a_resnet():
    from nni.common.concrete_trace_utils import concrete_trace

    nni_compat.apply()
    model = create_model("resnet20", 10).eval()
    x = torch.rand(2, 3, 32, 32)
    traced = concrete_trace(model, {"x": x})
    assert torch.allclose(traced(x), model(x), atol=1e-5)


def test_wraps_leaves_out_type_params_that_are_not_a_tuple():
    class LikeTypeOnPython3123:  # type.__type_params__ is a descriptor there (CPython gh-119011)
        __type_params__ = "a getset_descriptor"

    def wrapper():
        return 1

    wrapped = nni_compat.wraps(LikeTypeOnPython3123)(wrapper)  # functools.wraps raises on 3.12.0-3.12.3
    assert wrapped() == 1 and wrapped.__wrapped__ is LikeTypeOnPython3123
    assert wrapped.__name__ == "LikeTypeOnPython3123"
