import pytest
import torch

from edgetune.objectives.groups import GroupError, GroupRules, derive_groups, describe_groups
from edgetune.objectives.models import ModelError, create_model


def _names(groups):
    return {g.name: g.layers for g in groups}


@pytest.mark.parametrize("name, blocks", [("resnet20", 3), ("resnet56", 9)])
def test_cifar_resnets_group_the_first_conv_of_each_block_per_stage(name, blocks):
    groups = _names(derive_groups(create_model(name, 10)))
    assert list(groups) == ["layer1", "layer2", "layer3"]
    for stage, layers in groups.items():
        assert layers == [f"{stage}.{i}.conv1" for i in range(blocks)]


def test_resnet18_has_four_stages_of_two_blocks():
    groups = _names(derive_groups(create_model("resnet18", 10)))
    assert groups == {f"layer{s}": [f"layer{s}.0.conv1", f"layer{s}.1.conv1"] for s in range(1, 5)}


def test_bottleneck_blocks_group_both_inner_convs():
    groups = _names(derive_groups(create_model("resnet50", 10)))
    assert groups["layer1"][:2] == ["layer1.0.conv1", "layer1.0.conv2"]
    assert not any(name.endswith("conv3") or "downsample" in name for layers in groups.values() for name in layers)


def test_mobilenet_v2_groups_expansion_convs_by_stage():
    model = create_model("mobilenet_v2", 10)
    groups = derive_groups(model)
    modules = dict(model.named_modules())
    assert len(groups) == 6  # the bottleneck stages that expand (t=6)
    for group in groups:
        widths = set()
        for name in group.layers:
            conv = modules[name]
            assert conv.kernel_size == (1, 1) and conv.groups == 1 and name.endswith("conv.0.0")
            block = modules[name.rsplit(".conv.0.0", 1)[0]]
            widths.add(block.conv[-2].out_channels)
        assert len(widths) == 1  # one stage = one output width


def test_vgg11_bn_groups_convs_between_pools_and_keeps_the_last_conv():
    groups = _names(derive_groups(create_model("vgg11_bn", 10)))
    assert groups == {"block1": ["features.0"], "block2": ["features.4"], "block3": ["features.8", "features.11"],
                      "block4": ["features.15", "features.18"], "block5": ["features.22"]}  # features.25 feeds the head


def test_other_models_fall_back_to_top_level_stages_with_dependencies():
    groups = derive_groups(create_model("squeezenet1_0", 10))
    assert [g.name for g in groups] == ["features"]
    assert groups[0].coupled


def test_overrides_and_exclusions():
    model = create_model("resnet56", 10)
    rules = GroupRules(overrides={"early": [r"layer1\.\d+\.conv1"], "late": [r"layer[23]\.\d+\.conv1"]},
                       exclude=[r"layer1\.0\."])
    groups = _names(derive_groups(model, rules))
    assert groups["early"] == [f"layer1.{i}.conv1" for i in range(1, 9)]
    assert len(groups["late"]) == 18
    excluded = _names(derive_groups(model, GroupRules(exclude=[r"layer3\."])))
    assert list(excluded) == ["layer1", "layer2"]


def test_bad_overrides_are_clear():
    model = create_model("resnet20", 10)
    with pytest.raises(GroupError, match="search.groups.none: patterns .* match no Conv2d layer"):
        derive_groups(model, GroupRules(overrides={"none": ["nothing.*"]}))
    with pytest.raises(GroupError, match="is in both 'a' and 'b'"):
        derive_groups(model, GroupRules(overrides={"a": [r"layer1\..*"], "b": [r"layer1\.0\.conv1"]}))


def test_describe_groups_reports_params_and_flops_shares():
    model = create_model("resnet56", 10)
    rows = describe_groups(model, derive_groups(model), torch.zeros(2, 3, 32, 32))
    assert [r["name"] for r in rows] == ["layer1", "layer2", "layer3"]
    assert rows[0]["params"] == 9 * 16 * 16 * 9
    for row in rows:
        assert 0 < row["flops_share"] < 0.5 and 0 < row["params_share"] < 0.5


def test_unknown_model_is_clear():
    with pytest.raises(ModelError, match="unknown model 'resnet57'"):
        create_model("resnet57", 10)
