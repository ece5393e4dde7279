"""The front edgetune shows and exports: Optuna's, less what the uncompressed baseline dominates."""
import optuna

from edgetune.searcher.pareto import front, front_table, settings_short
from edgetune.searcher.params import PRUNER, SPARSITY, param_name


def _study(points, baseline=(2.0, 98.0)):
    study = optuna.create_study(directions=["minimize", "maximize"])
    study.set_user_attr("spec", {"study.targets": ["latency", "top1"]})
    study.set_user_attr("baseline_latency_ms", baseline[0])
    study.set_user_attr("baseline_top1", baseline[1])
    for latency, top1 in points:
        trial = study.ask()
        trial.set_user_attr("latency_ms", latency)
        trial.set_user_attr("top1", top1)
        study.tell(trial, [latency, top1])
    return study


def test_models_the_baseline_dominates_are_not_on_the_front():
    # slower and less accurate; slower at equal Top-1; faster but less accurate (kept); tied with the baseline (kept)
    study = _study([(2.4, 97.0), (2.1, 98.0), (1.0, 90.0), (2.0, 98.0)])
    assert [row.number for row in front(study)] == [2, 3]


def test_without_a_baseline_the_front_is_optunas():
    study = _study([(2.4, 97.0), (1.0, 90.0)], baseline=(None, None))
    assert [row.number for row in front(study)] == [1, 0]


def test_settings_show_depth_and_widths_as_realized():
    attrs = {"depth": {"layer1": 3, "layer2": 5}, "stream_width": {"layer1": 16, "layer2": 24},
             "inner_width": {"layer1": 8, "layer2": 16}, "pruner": "l1",
             "precision_plan": {"layer1": "int8", "layer2": "f32", "other": "f32"}}
    assert settings_short({}, attrs) == "d 3/5 s 16/24 i 8/16 l1 i8/f32/f32"
    assert settings_short({}, {**attrs, "seeded": "uniform-1/3"}).endswith("(recipe uniform-1/3)")
    assert settings_short({}, {**attrs, "finalized_from": 0}).endswith("(finalized from 0)")  # trial 0 trained longer
    old = {"pruner": "l2", "precision_plan": {"layer1": "f32", "other": "f32"}}
    assert settings_short({param_name(SPARSITY, "layer1"): 0.35, PRUNER: "l2"}, old, ["layer1"]) == "l2 .35"


def test_the_table_shows_the_baseline_row():
    table = front_table(_study([(1.0, 97.0)]))
    assert table.row_count == 2


def test_the_settings_header_names_stages_and_groups_apart_where_they_differ():
    """MobileNet: depth and stream width per stage (stage1..3), inner width per group (stage2..3, no
    expansion in stage1); a ResNet's groups are its stages, named once."""
    def header(stages, groups):
        study = _study([(1.0, 97.0)])
        study.set_user_attr("channel_multiple", 8)
        study.set_user_attr("stages", [{"name": s} for s in stages])
        study.set_user_attr("groups", [{"name": g} for g in groups])
        return front_table(study).columns[-1].header

    assert header(["stage1", "stage2", "stage3"], ["stage2", "stage3"]) == \
        "d/s stage1/stage2/stage3, i stage2/stage3, pruner, precision +other"
    assert header(["layer1", "layer2"], ["layer1", "layer2"]) == "d/s/i layer1/layer2, pruner, precision +other"
