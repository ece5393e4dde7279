"""Depthwise, grouped and shuffled convolutions lose their channels for real (Torch-Pruning's DepGraph),
on torchvision's MobileNetV2/V3, EfficientNet-B0, RegNet and ShuffleNetV2; their groups follow the stages."""
import copy

import pytest
import torch
from torch import nn

from edgetune.objectives import depgraph, prune
from edgetune.objectives.data import DataSplits
from edgetune.objectives.groups import derive_groups
from edgetune.objectives.models import count_params, create_model
from edgetune.searcher.params import WIDTH, param_name

X = torch.rand(2, 3, 32, 32)  # the digits data: 32x32 RGB (objectives/data.py)
FAMILIES = ["mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "regnet_x_400mf", "shufflenet_v2_x1_0"]


def _conv_channels(model):
    return sum(m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d))


def _pruned_half(name, pruner="l1"):
    """What ``pipeline.shrink`` does for inner widths, every group asked for half its width."""
    model = create_model(name, 10).eval()
    groups = derive_groups(model)
    widths = prune.group_widths(prune.out_channels(model, groups), groups)
    asked = {g: w // 2 for g, w in widths.items()}
    keep = prune.kept_channels(model, groups, asked)
    masks = prune.compute_masks(model, prune.config_list(model, groups, keep, X), pruner)
    engine = prune.remove_channels(model, masks, X)
    return model, groups, keep, engine


def _grouped_parts(model, layer):
    """The groups count a layer's channels must divide into: that of a grouped (not depthwise) conv
    in the same block (RegNet's f.b), else 1."""
    block = model.get_submodule(layer.rsplit(".f.", 1)[0]) if ".f." in layer else None
    convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)] if block is not None else []
    return max([m.groups for m in convs if 1 < m.groups < m.out_channels] or [1])


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "regnet_x_400mf"
                                  else n for n in FAMILIES])
def test_half_width_removes_channels_for_real(name):
    reference = create_model(name, 10).eval()
    model, groups, keep, engine = _pruned_half(name)
    assert engine == "torch-pruning"
    assert model(X).shape == reference(X).shape == (2, 10)
    assert count_params(model) < 0.8 * count_params(reference)
    assert _conv_channels(model) < _conv_channels(reference)
    realized = prune.out_channels(model, groups)
    assert set(realized) == set(keep)
    for layer, asked in keep.items():
        parts = _grouped_parts(model, layer)
        # a grouped conv keeps the same count in each of its groups: the nearest multiple of its groups
        assert realized[layer] % parts == 0 and abs(realized[layer] - asked) <= parts / 2, layer
    if name != "regnet_x_400mf":
        assert realized == keep
    sparsity = prune.achieved_sparsity(prune.out_channels(reference, groups), realized, groups)
    assert all(0.4 <= s <= 0.6 for s in sparsity.values()), sparsity


@pytest.mark.parametrize("name, stages", [
    ("regnet_x_400mf", [f"trunk_output.block{i}" for i in range(1, 5)]),
    ("efficientnet_b0", [f"features.{i}" for i in range(1, 8)]),
    ("shufflenet_v2_x1_0", ["stage2", "stage3", "stage4"]),
])
def test_groups_are_the_stages(name, stages):
    model = create_model(name, 10)
    groups = derive_groups(model)
    assert [g.name for g in groups] == stages
    assert all(g.scopes == [g.name] and not g.coupled for g in groups)
    modules = dict(model.named_modules())
    for group in groups:
        for layer in group.layers:  # the channels each layer owns: 1x1 into a depthwise/grouped conv, grouped 3x3, SE squeeze
            assert layer.startswith(group.name + ".")
            assert not layer.endswith(("fc2", "f.c.0", "branch2.5")), layer
            assert modules[layer].groups == 1 or name == "regnet_x_400mf"


def test_regnet_prunes_the_grouped_conv_and_what_feeds_it():
    model = create_model("regnet_x_400mf", 10)
    layers = derive_groups(model)[0].layers
    assert layers == ["trunk_output.block1.block1-0.f.a.0", "trunk_output.block1.block1-0.f.b.0"]


def test_a_grouped_conv_loses_the_same_positions_in_every_group():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, 12, 3, padding=1, groups=2), nn.ReLU(),
                          nn.Conv2d(12, 5, 1)).eval()
    x = torch.rand(2, 3, 8, 8)
    a, b = torch.ones(8, dtype=torch.bool), torch.ones(12, dtype=torch.bool)
    a[[1, 2, 6]] = False  # NNI's choice: 2 from group 0, 1 from group 1 -> position 2 in both (its votes are fewest)
    b[[0, 7, 8, 11]] = False  # kept per group: 5 and 3 -> 4 each; positions 2 and 5 kept least
    masks = {"0": {"weight": a.float().view(8, 1, 1, 1).expand(8, 3, 1, 1)},
             "2": {"weight": b.float().view(12, 1, 1, 1).expand(12, 4, 3, 3)}}
    zeroed = copy.deepcopy(model)
    pruned = depgraph.remove_masked(model, masks, x)
    assert (pruned[0].out_channels, pruned[2].in_channels, pruned[2].out_channels, pruned[2].groups) == (6, 6, 8, 2)
    with torch.no_grad():
        for conv, gone in ((zeroed[0], [2, 6]), (zeroed[2], [2, 5, 8, 11])):
            conv.weight[gone] = 0
            conv.bias[gone] = 0
        assert torch.allclose(zeroed(x), pruned(x), atol=1e-6)


@pytest.mark.slow
def test_plain_convolutions_still_go_through_nni():
    model, _, keep, engine = _pruned_half("resnet20")
    assert engine == "nni" and prune.out_channels(model, derive_groups(model)) == keep


def test_the_engine_reaches_the_trial_attributes(monkeypatch):
    from edgetune.objectives import pipeline

    data = DataSplits("random", X, torch.zeros(2, dtype=torch.int64), X, torch.zeros(2, dtype=torch.int64),
                      [str(i) for i in range(10)], (0.5,) * 3, (0.25,) * 3)
    seen = {}

    def measured(model, ctx, plan, settings, device_plan, clock):
        seen["width"] = prune.group_widths(prune.out_channels(model, ctx.groups), ctx.groups)
        return pipeline.TrialOutcome({}, None, model, None)

    monkeypatch.setattr(pipeline, "fine_tune_and_measure", measured)
    for name, engine in (("mobilenet_v2", "torch-pruning"), ("resnet20", "nni")):
        baseline = create_model(name, 10).eval()
        groups = derive_groups(baseline)
        ctx = pipeline.TrialContext(baseline, data, groups, device=None)
        first = groups[0].name
        outcome = pipeline.run_trial(ctx, pipeline.TrialPlan(inner={first: 8}))
        assert outcome.attributes["prune_engine"] == engine and seen["width"][first] == 8
    assert pipeline.run_trial(ctx, pipeline.TrialPlan()).attributes["prune_engine"] is None  # nothing to remove


def test_pruned_mobilenet_v2_exports_to_onnx_with_fewer_channels(tmp_path):
    import onnx

    from edgetune.devices.onnx_export import export_onnx

    def onnx_conv_channels(model, path):
        graph = onnx.load(str(export_onnx(model, X, path))).graph
        weights = {t.name: t.dims for t in graph.initializer}
        return sum(weights[node.input[1]][0] for node in graph.node if node.op_type == "Conv")

    model, _, _, _ = _pruned_half("mobilenet_v2")
    full = onnx_conv_channels(create_model("mobilenet_v2", 10).eval(), tmp_path / "full.onnx")
    pruned = onnx_conv_channels(model, tmp_path / "pruned.onnx")
    assert pruned == _conv_channels(model) < full


def test_a_model_whose_streams_cannot_be_pruned_searches_no_stream_width():
    """ShuffleNet's channel shuffle defeats Torch-Pruning's tracer: the study learns it before its first
    trial (one check, stored) and searches every other dimension."""
    from edgetune.objectives.structure import residual_stages, stream_pruning_error
    from edgetune.searcher.space import build_space
    from edgetune.searcher.spec import load_spec

    spec = load_spec(None, {"model.name": "shufflenet_v2_x1_0"})
    shuffle = create_model("shufflenet_v2_x1_0", 10).eval()
    stages = residual_stages(shuffle)
    error = stream_pruning_error(shuffle, stages, X, 8)
    assert stages and error and "\n" not in error
    space = build_space(spec, shuffle, derive_groups(shuffle), stages, ["f32"], 8, "spec", error)
    assert not space.stream and space.inner and space.stream_error == error
    assert any(row["parameter"] == param_name(WIDTH, "*") and error in row["range"] for row in space.describe())
    resnet = create_model("resnet20", 10).eval()
    assert stream_pruning_error(resnet, residual_stages(resnet), X, 8) is None
