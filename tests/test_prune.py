import pytest
import torch

from edgetune.objectives import prune
from edgetune.objectives.groups import derive_groups
from edgetune.objectives.models import count_params, create_model, flops_and_params


def _pruned(name, ratio, pruner="l1", example=None):
    model = create_model(name, 10).eval()
    groups = derive_groups(model)
    example = example if example is not None else torch.rand(2, 3, 32, 32)
    before = prune.out_channels(model, groups)
    keep = prune.kept_channels(model, groups, {g.name: round(prune.group_widths(before, [g])[g.name] * (1 - ratio))
                                               for g in groups})
    masks = prune.compute_masks(model, prune.config_list(model, groups, keep, example), pruner)
    prune.speedup(model, masks, example)
    return model, prune.achieved_sparsity(before, prune.out_channels(model, groups), groups)


@pytest.mark.parametrize("pruner", ["l1", "l2", "fpgm"])
def test_pruning_and_speedup_shrink_resnet20_and_keep_its_output_shape(pruner):
    x = torch.rand(4, 3, 32, 32)
    reference = create_model("resnet20", 10).eval()
    flops0, _ = flops_and_params(reference, x)
    model, achieved = _pruned("resnet20", 0.5, pruner)
    flops1, _ = flops_and_params(model, x)
    assert count_params(model) < 0.8 * count_params(reference)
    assert flops1 < 0.8 * flops0
    assert achieved == {"layer1": 0.5, "layer2": 0.5, "layer3": 0.5}
    assert model(x).shape == (4, 10)
    assert model.layer2[1].conv1.out_channels == 16 and model.layer2[1].conv2.in_channels == 16


def test_more_sparsity_means_fewer_parameters_and_flops():
    x = torch.rand(2, 3, 32, 32)
    sizes = [flops_and_params(_pruned("resnet20", r)[0], x)[0] for r in (0.2, 0.5, 0.8)]
    assert sizes[0] > sizes[1] > sizes[2]


def test_resnet18_prunes_too():
    model, achieved = _pruned("resnet18", 0.5, "fpgm")
    assert set(achieved.values()) == {0.5}
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_coupled_groups_prune_residual_channels_together():
    from edgetune.objectives.groups import GroupRules

    model = create_model("resnet20", 10).eval()
    x = torch.rand(2, 3, 32, 32)
    # conv2 of every block of a stage feeds the same residual sum: its channels are coupled.
    groups = derive_groups(model, GroupRules(overrides={"stage3_out": [r"layer3\.\d+\.conv2"]}))
    assert groups[0].coupled
    configs = prune.config_list(model, groups, prune.kept_channels(model, groups, {"stage3_out": 32}), x)
    assert all(c["op_types"] == ["Conv2d"] for c in configs)
    # NNI links a conv to the projection shortcut it is added to (identity chains it leaves to speedup)
    assert any("dependency_group_id" in c for c in configs if c["op_names"] == ["layer3.0.conv2"])
    prune.speedup(model, prune.compute_masks(model, configs, "l1"), x)
    widths = {model.layer3[i].conv2.out_channels for i in range(3)}
    assert len(widths) == 1  # the residual sum still adds equal widths
    assert model(x).shape == (2, 10)


def test_full_width_builds_no_config():
    model = create_model("resnet20", 10)
    groups = derive_groups(model)
    keep = prune.kept_channels(model, groups, {"layer1": 16})
    assert keep and prune.config_list(model, groups, keep, torch.rand(2, 3, 32, 32)) == []


def test_kept_channels_are_exact_and_aligned():
    from edgetune.objectives.groups import GroupRules

    model = create_model("resnet18", 10).eval()
    x = torch.rand(2, 3, 32, 32)
    # one group with layers of 64, 128 and 256 channels: the widest keeps 96, the others the same share, in 16s
    groups = derive_groups(model, GroupRules(overrides={"mixed": [r"layer1\.0\.conv1", r"layer2\.0\.conv1", r"layer3\.0\.conv1"]}))
    keep = prune.kept_channels(model, groups, {"mixed": 96}, multiple=16)
    assert keep == {"layer1.0.conv1": 32, "layer2.0.conv1": 48, "layer3.0.conv1": 96}
    prune.speedup(model, prune.compute_masks(model, prune.config_list(model, groups, keep, x), "l2"), x)
    assert prune.out_channels(model, groups) == keep
    assert all(v % 16 == 0 for v in keep.values())


def test_aligned_never_exceeds_the_width():
    assert prune.aligned(24, 0.5, 16) == 16
    assert prune.aligned(24, 0.9, 16) == 24
    assert prune.aligned(10, 0.1, 16) == 10
    assert prune.aligned(64, 0.25, 8) == 16


def test_unknown_pruner_is_clear():
    with pytest.raises(prune.PruneError, match="unknown pruner 'l3'"):
        prune.compute_masks(create_model("resnet20", 10), [], "l3")
