"""The search benchmark's scoring and resume logic, on hand-made studies (the figures in BENCHMARKS.md
come from these functions)."""
import json
import sqlite3

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from bench import miss_reruns, search_efficiency
from edgetune.searcher.params import INNER, param_name


@pytest.fixture(scope="module")
def reruns():
    return miss_reruns


@pytest.fixture(scope="module")
def bench():
    return search_efficiency


def add(study, state, latency=None, top1=None, **attrs):
    if state == TrialState.COMPLETE:
        attrs.update(latency_ms=latency, top1=top1)
        values = [latency, top1]
    else:
        values = None
    study.add_trial(create_trial(state=state, values=values, user_attrs=attrs))


def two_objective(storage=None, name="s"):
    study = optuna.create_study(storage=storage, study_name=name, directions=["minimize", "maximize"])
    study.set_user_attr("baseline_latency_ms", 2.0)
    study.set_user_attr("baseline_top1", 90.0)
    return study


def test_score_is_relative_to_the_study_baseline_and_skips_re_run_trials(bench):
    study = two_objective()
    add(study, TrialState.COMPLETE, 1.0, 90.0)  # 0.5x the baseline at its Top-1
    add(study, TrialState.FAIL)  # its worker was stopped: re-run under a later number
    add(study, TrialState.FAIL, failure="collapsed")  # failed on its own: counts, keeps the curve flat
    add(study, TrialState.COMPLETE, 0.4, 85.0)
    add(study, TrialState.COMPLETE, 0.2, 50.0)  # beyond the reference point: adds nothing
    result = bench.score(study, trials=3)
    # Reference: latency 1.1 (relative), Top-1 90 - 9 - 1 = 80; (0.5, 90) covers 0.6 x 10.
    assert result["curve"] == pytest.approx([6.0, 6.0, 6.0 + 0.3 * 5])
    assert result["points"] == [(0.5, 90.0), (0.2, 85.0)]
    assert result["numbers"] == [0, 3]  # the trials behind the points, for bench/miss_reruns.py
    assert bench.fastest_within(result, 1.0) == 0.5
    assert bench.fastest_within(result, 5.0) == 0.2
    assert bench.trials_to_reach(result["curve"], 7.0) == 3
    assert bench.trials_to_reach(result["curve"], 8.0) is None


def test_gain_at_sweep_front_compares_at_equal_top1(bench):
    sweep = {"points": [(1.0, 90.0), (0.6, 80.0), (0.7, 70.0)]}  # (0.7, 70) is dominated
    result = {"points": [(0.3, 85.0), (0.9, 95.0)]}
    # Sweep front (0.6, 80), (1.0, 90): fastest at >= 80 is 0.3 (0.5x); at >= 90 it is 0.9 (0.9x).
    assert bench.gain_at_sweep_front(result, sweep) == pytest.approx([0.5, 0.9])
    assert bench.gain_at_sweep_front({"points": [(0.1, 60.0)]}, sweep) == [None, None]
    # what is left undominated, and by how far: (0.6, 80) is matched; at (1.0, 90) the best model
    # at most as slow has 85, 5 points short; a model faster than every sweep model is no match
    assert bench.misses({"points": [(0.3, 85.0)]}, sweep) == [(1.0, 90.0, 5.0)]
    assert bench.misses(result, sweep) == []
    assert bench.misses({"points": [(0.9, 95.0)]}, sweep) == [(0.6, 80.0, None)]


def test_resume_and_snapshot_keep_only_finished_studies(bench, tmp_path):
    db = f"sqlite:///{tmp_path / 'run.db'}"
    done = two_objective(db, "task-tpe-0")
    for i in range(3):
        add(done, TrialState.COMPLETE, 1.0 - 0.1 * i, 90.0)
    cut = two_objective(db, "task-random-0")
    add(cut, TrialState.COMPLETE, 1.0, 90.0)
    add(cut, TrialState.PRUNED)
    add(cut, TrialState.RUNNING)  # left by a killed run: still to be run, not budget spent
    assert bench.finished(db, "task-tpe-0", 3)
    assert not bench.finished(db, "task-random-0", 3)
    assert not bench.finished(db, "task-nsga2-0", 3)

    results = bench.load_results(db, "task", ["tpe", "random"], [0], 3)
    assert list(results) == ["tpe"]

    copy = tmp_path / "results" / "task.db"
    assert bench.snapshot(db, copy, 3) == ["task-tpe-0"]
    names = [s.study_name for s in optuna.get_all_study_summaries(f"sqlite:///{copy}", include_best_trial=False)]
    assert names == ["task-tpe-0"]
    with sqlite3.connect(tmp_path / "run.db") as source:  # the source keeps everything
        assert source.execute("select count(*) from studies").fetchone() == (2,)


def test_the_summary_says_whose_front_dominates_the_sweeps(bench):
    sweep = {0: {"curve": [1.0], "points": [(1.0, 90.0), (0.6, 80.0)], "baseline_top1": 90.0}}
    # the faster model is a recipe seed's, the more accurate one the sampler's: neither alone dominates
    better = {0: {"curve": [2.0], "points": [(0.5, 80.0), (0.9, 91.0)], "seeded": [True, False], "baseline_top1": 90.0}}
    worse = {0: {"curve": [0.5], "points": [(0.5, 80.0)], "baseline_top1": 90.0}}
    lines = bench.summarise({"uniform": sweep, "tpe": better, "random": worse}, trials=1)
    rows = {line.split(" | ")[0].strip("| "): line for line in lines[-3:]}
    # seeds whose front dominates; sweep-front models left undominated by all / the seeds / the sampler's
    # trials; those left by all, with the Top-1 its best model at no higher latency lacks
    assert rows["tpe"].endswith("| 1 of 1 | 0 / 1 / 1 of 2 | - |")
    assert rows["random"].endswith("| 0 of 1 | 1 / 2 / 1 of 2 | 0: 1.000 @ 90.00 (10.00) |")
    assert rows["uniform"].endswith("| 1 of 1 | 0 / 2 / 0 of 2 | - |")  # a front dominates itself


def test_a_longer_budget_shows_hypervolume_every_ten_trials(bench):
    curve = [float(i) for i in range(1, 21)]
    sweep = {0: {"curve": curve, "points": [(1.0, 90.0)], "baseline_top1": 90.0}}
    lines = bench.summarise({"uniform": sweep}, trials=20)
    header = next(line for line in lines if "hypervolume after 10 trials" in line)
    assert "hypervolume after 20 trials" in header
    row = lines[lines.index(header) + 2]
    assert row == "| uniform | 10.000 (10.000-10.000) | 20.000 (20.000-20.000) |"
    assert not any("hypervolume after" in line for line in bench.summarise({"uniform": sweep}, trials=10))


def test_reruns_pair_each_miss_with_the_most_accurate_model_no_slower(reruns):
    sweep = {"points": [(1.0, 92.0), (0.6, 80.0)], "numbers": [4, 7]}
    own = {"points": [(0.3, 85.0), (0.5, 85.0), (0.2, 70.0)], "numbers": [1, 2, 5]}
    results = {"tpe": {0: own}, "uniform": {0: sweep}, "uniform-int8": {0: {"points": [(0.1, 75.0)], "numbers": [3]}}}
    pairs = reruns.miss_pairs(results, "tpe", 0)
    # (1.0, 92) is missed: of the two at 85 the faster (trial 1); (0.1, 75) has nothing as fast
    assert pairs == [{"sweep": "uniform", "number": 4, "point": (1.0, 92.0), "match": {"number": 1, "point": (0.3, 85.0)}},
                     {"sweep": "uniform-int8", "number": 3, "point": (0.1, 75.0), "match": None}]


def test_reruns_avoid_the_original_fine_tune_seed(reruns):
    order = reruns.rerun_order([0, 2, 5], 3)
    assert sorted(order) == [0, 0, 0, 2, 2, 2, 5, 5, 5]
    # the seed is the study's plus the trial number: no rerun sits at its original's number
    assert all(original != position for position, original in enumerate(order))
    # one model whose own number comes up: that trial repeats the recorded draw, and one more runs
    assert reruns.rerun_order([1], 2) == [1, 1, 1]


def test_rerun_points_leave_out_a_repeat_of_the_recorded_draw(reruns):
    study = two_objective()  # baseline 2.0 ms
    add(study, TrialState.COMPLETE, 1.0, 91.0, rerun_of=1)
    add(study, TrialState.COMPLETE, 1.0, 99.0, rerun_of=1)  # trial 1 repeats trial 1's seed: left out
    add(study, TrialState.COMPLETE, 0.5, 80.0, rerun_of=4)
    add(study, TrialState.FAIL, rerun_of=4)
    assert reruns.rerun_points(study) == {1: [(0.5, 91.0)], 4: [(0.25, 80.0)]}


def test_a_twin_sweep_fine_tunes_every_point_with_another_seed(bench):
    x = param_name(INNER, "x")
    a, b, c = {x: 8}, {x: 6}, {x: 4}
    points = [a, a, b, c, b]  # rounding makes sweep points equal; none may keep its trial number
    twin = bench.twin_order(points)
    assert sorted(map(str, twin)) == sorted(map(str, points))  # the same points
    assert all(t != p for t, p in zip(twin, points))
    with pytest.raises(ValueError):
        bench.twin_order([a, a])


def test_a_summary_of_some_methods_keeps_the_others_scores(bench, tmp_path):
    path = tmp_path / "search.json"
    bench.write_json(path, 10, {"tpe": {0: {"curve": [1.0]}}, "uniform": {0: {"curve": [0.5]}}})
    bench.write_json(path, 10, {"uniform": {0: {"curve": [0.7]}, 1: {"curve": [0.6]}}})
    stored = json.loads(path.read_text())["results"]
    assert stored == {"tpe": {"0": {"curve": [1.0]}}, "uniform": {"0": {"curve": [0.7]}, "1": {"curve": [0.6]}}}
    bench.write_json(path, 40, {"uniform": {0: {"curve": [0.1]}}})  # another budget: a record of its own
    assert json.loads(path.read_text())["results"] == {"uniform": {"0": {"curve": [0.1]}}}
