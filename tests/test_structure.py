"""Depth and residual-stream width: stages found, blocks removed for real, coupled streams pruned."""
import optuna
import pytest
import torch
from torch import nn

from edgetune.devices import create_device
from edgetune.devices.protocol import LatencyProtocol
from edgetune.objectives import structure
from edgetune.objectives.model_files import load_pruned, write_model_files
from edgetune.objectives.groups import OTHER, derive_groups
from edgetune.objectives.models import count_params, create_model
from edgetune.searcher.params import FLOAT, INNER, PRECISION, WIDTH, param_name

X = torch.rand(2, 3, 32, 32)


def _stages(name):
    model = create_model(name, 10).eval()
    return model, structure.residual_stages(model)


def test_resnet_stages_and_which_blocks_can_go():
    _, stages = _stages("resnet20")
    assert [s.name for s in stages] == ["layer1", "layer2", "layer3"]
    assert [s.stream_width for s in stages] == [16, 32, 64]
    # layer1 has no projection: all 3 blocks can go (one stays); layer2/3 keep their first block
    assert [s.removable for s in stages][1] == ("layer2.1", "layer2.2")
    assert [s.min_depth for s in stages] == [1, 1, 1]
    _, stages = _stages("resnet50")
    assert [len(s.blocks) for s in stages] == [3, 4, 6, 3] and stages[0].removable == ("layer1.1", "layer1.2")


def test_mobilenet_v2_stages_follow_the_stream_width():
    _, stages = _stages("mobilenet_v2")
    assert [s.stream_width for s in stages] == [16, 24, 32, 64, 96, 160, 320]
    assert [len(s.removable) for s in stages] == [0, 1, 2, 3, 2, 2, 0]


def test_a_model_without_residual_blocks_has_no_stages():
    assert structure.residual_stages(create_model("vgg11", 10)) == []


def test_removed_blocks_keep_the_output_shape_and_leave_the_deployed_graph():
    model, stages = _stages("resnet20")
    removed = [b for s in stages for b in structure.blocks_to_remove(s, 1, {})]
    assert len(removed) == 6
    shallow = structure.remove_blocks(create_model("resnet20", 10).eval(), removed)
    assert shallow(X).shape == (2, 10)
    assert structure.depths(shallow, stages) == {"layer1": 1, "layer2": 1, "layer3": 1}
    device = create_device("openvino:CPU", protocol=LatencyProtocol(max_seconds=0.2, min_runs=5, warmup_runs=1,
                                                                    warmup_seconds=0.01))
    full, cut = device.deploy(model, X), device.deploy(shallow, X)
    try:
        convs_full, convs_cut = sum(full.precision_used.values()), sum(cut.precision_used.values())
        # 12 of resnet20's 22 convolutions were in the 6 removed blocks (2 each)
        assert convs_full - convs_cut == 12
    finally:
        full.close()
        cut.close()


def test_the_block_ranking_removes_the_least_important_first():
    model, stages = _stages("resnet20")
    labels = torch.randint(0, 10, (2,))
    scores = structure.block_importance(model, stages, X, labels)
    assert set(scores) == {b for s in stages for b in s.removable}
    layer1 = stages[0]
    order = sorted(layer1.removable, key=lambda b: scores[b])
    assert structure.blocks_to_remove(layer1, 2, scores) == order[:1]
    assert structure.blocks_to_remove(layer1, 9, scores) == []  # more than it has: nothing goes
    assert sorted(structure.blocks_to_remove(stages[1], 0, scores)) == ["layer2.1", "layer2.2"]  # never below 1


@pytest.mark.parametrize("name,widths", [("resnet20", {"layer1": 8, "layer2": 16, "layer3": 24}),
                                         ("resnet18", {"layer1": 32, "layer2": 64, "layer3": 96, "layer4": 128})])
def test_stream_width_prunes_every_coupled_layer_runs_and_exports(name, widths, tmp_path):
    model, stages = _stages(name)
    params = count_params(model)
    structure.prune_streams(model, stages, widths, X, "l2")
    assert structure.stream_widths(model, stages) == widths
    assert model(X).shape == (2, 10)
    assert count_params(model) < params
    last = stages[-1]
    assert model.fc.in_features == widths[last.name]  # the classifier reads the last stream
    # the stream feeds the next stage's first block and its projection shortcut
    first_of_second = model.get_submodule(stages[1].blocks[0])
    assert first_of_second.conv1.in_channels == widths[stages[0].name]
    assert first_of_second.downsample[0].in_channels == widths[stages[0].name]
    onnx = write_model_files(model, name, 10, X, tmp_path)[0]
    assert onnx.stat().st_size > 0
    reloaded = load_pruned(tmp_path)
    assert torch.allclose(reloaded(X), model(X), atol=1e-5)


def test_depth_stream_and_inner_widths_together_reload_exactly(tmp_path, caplog):
    from edgetune.objectives import prune

    model, stages = _stages("resnet20")
    groups = derive_groups(model)
    structure.remove_blocks(model, ["layer1.1", "layer3.2"])
    structure.prune_streams(model, stages, {"layer2": 16}, X)
    keep = prune.kept_channels(model, groups, {"layer3": 32}, multiple=8)
    prune.speedup(model, prune.compute_masks(model, prune.config_list(model, groups, keep, X), "l1"), X)
    assert prune.out_channels(model, groups)["layer3.0.conv1"] == 32
    assert not [r for r in caplog.records if "Identity" in r.getMessage()]  # removed blocks: nothing to tell
    assert "layer3.2.conv1" not in prune.out_channels(model, groups)
    write_model_files(model, "resnet20", 10, X, tmp_path)
    reloaded = load_pruned(tmp_path)
    assert isinstance(reloaded.layer1[1], nn.Identity)
    assert torch.allclose(reloaded(X), model(X), atol=1e-5)


def test_the_search_space_counts_whole_multiples():
    from edgetune.searcher.space import SearchSpace, Widths, build_space, suggest_plan
    from edgetune.searcher.spec import load_spec

    spec = load_spec(overrides={"search.sparsity_max": 0.8})
    model, stages = _stages("resnet20")
    groups = derive_groups(model)
    space = build_space(spec, model, groups, stages, ["f32"], 8)
    assert space.inner["layer3"] == Widths(64, 8, 2) and space.inner["layer3"].describe() == "16..64 step 8"
    assert space.depth == {"layer1": (1, 3), "layer2": (1, 3), "layer3": (1, 3)}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(30):
        trial = study.ask()
        plan = suggest_plan(trial, spec, groups, space)
        study.tell(trial, 0.0)
        assert all(v % 8 == 0 for v in [*plan.inner.values(), *plan.stream.values()])
        seen.add(plan.inner["layer3"])
    assert seen <= {16, 24, 32, 40, 48, 56, 64} and len(seen) > 3
    # a width that is not a multiple: the last step is the full width
    assert [Widths(24, 16, 1).channels(k) for k in (1, 2)] == [16, 24]
    assert Widths(24, 16, 1).describe() == "16, 24" and Widths(72, 16, 1).describe() == "16..64 step 16, 72"
    # every dimension can be switched off
    off = load_spec(overrides={"search.depth": False, "search.stream_width": False, "search.inner_width": False})
    assert build_space(off, model, groups, stages, ["f32"], 8).describe() == []
    assert SearchSpace(["f32"]).describe() == []


def test_the_space_names_what_the_devices_granularity_collapsed(known_host):
    """The multiple and the precisions come from the device as this host declares them; a width with one
    value at that multiple but several at a finer one is named, with the finer multiple that searches it."""
    from edgetune.searcher.space import allowed_precisions, build_space, channel_multiple, searched_parameters
    from edgetune.searcher.spec import load_spec

    spec = load_spec()  # sparsity_max 0.8
    model, stages = _stages("resnet20")
    groups = derive_groups(model)
    info = create_device("openvino:CPU").info()
    precisions = allowed_precisions(spec, info)
    multiple, source = channel_multiple(spec, info, precisions)
    assert (multiple, source) == (known_host.channel_block, "device openvino:CPU")
    space = build_space(spec, model, groups, stages, precisions, multiple, source)
    searched = searched_parameters(spec, groups, space)
    assert (param_name(PRECISION, FLOAT) in searched) == known_host.bf16 and param_name(PRECISION, "layer1") in searched
    if multiple == 16:  # the 16-channel stage: one width; at 8, two
        collapsed = (param_name(INNER, "layer1"), param_name(WIDTH, "layer1"))
        assert space.collapsed == collapsed and space.finer_multiple == 8
        assert param_name(INNER, "layer1") not in searched and param_name(INNER, "layer2") in searched
        assert space.collapse_note().startswith("widths in multiples of 16 (from the device openvino:CPU) leave "
                                                f"{', '.join(collapsed)} one value; set search.channel_multiple = 8 ")
    else:
        assert space.collapsed == () and space.collapse_note() == "" and param_name(INNER, "layer1") in searched


def test_a_space_of_one_point_is_refused_with_the_reason():
    from edgetune.searcher.space import build_space, check_searchable, searched_parameters
    from edgetune.searcher.spec import SpecError, load_spec

    model, stages = _stages("resnet20")
    groups = derive_groups(model)
    spec = load_spec(overrides={"model.name": "resnet20", "search.depth": False, "search.stream_width": False,
                                "search.inner_width": False, "search.precisions": ["f32"]})
    space = build_space(spec, model, groups, stages, ["f32"], 8)
    assert searched_parameters(spec, groups, space) == []  # three pruners, but nothing for them to prune
    with pytest.raises(SpecError, match=r"^nothing to search: no width or depth of resnet20 has two values "
                                        r"\(search.inner_width, search.stream_width, search.depth off\), nor the "
                                        r"precision \(precisions: f32\); every trial would be the same model"):
        check_searchable(spec, groups, space)
    off = {"search.depth": False, "search.stream_width": False, "search.inner_width": False}
    every_group = {g: "int8" for g in ["layer1", "layer2", "layer3", OTHER]}
    fixed = load_spec(overrides={**off, "search.precisions": ["f32", "int8"], "search.fixed_precisions": every_group})
    assert searched_parameters(fixed, groups, build_space(fixed, model, groups, stages, ["f32", "int8"], 8)) == []
    free = load_spec(overrides={**off, "search.precisions": ["f32", "int8"]})
    assert searched_parameters(free, groups, build_space(free, model, groups, stages, ["f32", "int8"], 8)) == [
        param_name(PRECISION, g) for g in ["layer1", "layer2", "layer3", OTHER]]
    # a model of 16-channel layers at a granularity of 16: one width each, and 8 would search them
    narrow = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Conv2d(16, 16, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                           nn.Flatten(), nn.Linear(16, 10))
    spec = load_spec(overrides={"search.precisions": ["f32"]})
    space = build_space(spec, narrow, derive_groups(narrow), [], ["f32"], 16, "device openvino:CPU")
    assert space.collapsed and space.finer_multiple == 8
    with pytest.raises(SpecError, match=r"^nothing to search: widths in multiples of 16 \(from the device openvino:CPU\) "
                                        r"leave inner\.\S+ one value, and nothing else has two \(precisions: f32\); "
                                        r"set search.channel_multiple = 8 to search finer widths anyway"):
        check_searchable(spec, derive_groups(narrow), space)
    assert searched_parameters(spec, derive_groups(narrow), build_space(spec, narrow, derive_groups(narrow), [], ["f32"], 8))
