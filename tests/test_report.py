"""`tune report` and the class-level harm computations."""
import numpy as np
import optuna
import pytest
from PIL import Image
from typer.testing import CliRunner

from edgetune.searcher import pareto
from edgetune.searcher.cli import app
from edgetune.searcher.harm import class_metrics, flagged_classes, flips
from edgetune.searcher.params import INNER, SPARSITY, param_name
from edgetune.searcher.report_plots import top1_range


@pytest.mark.slow
def test_report_folder_has_real_plots_and_tables(tiny_study, tmp_path):
    storage = f"sqlite:///{tiny_study}/tiny.db"
    result = CliRunner().invoke(app, ["report", "tiny", "--storage", storage, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "tiny"
    with Image.open(folder / "front.png") as image:
        assert image.format == "PNG" and image.size[0] > 400
    assert (folder / "front.html").stat().st_size > 1000 and 'src="../plotly.min.js"' in (folder / "front.html").read_text()
    assert (tmp_path / "plotly.min.js").is_file() and not (folder / "plotly.min.js").exists()  # one for every report
    report = (folder / "report.md").read_text()
    for heading in ("## What was measured", "## Pareto front", "## Hypervolume over trials",
                    "## Structure against each objective", "## Time per phase", "## Class-level harm"):
        assert heading in report, heading
    assert "| baseline |" in report
    assert "- Model: resnet20, " in report and "- Data: digits, 10 classes, 3×32×32 inputs" in report
    assert "- Device: openvino:CPU (" in report and "runtime openvino 20" in report
    assert "sparsity" not in report.split("## Structure against each objective", 1)[1].split("##")[0]  # no such column
    assert "in ms × Top-1 points: higher is better" in report


def test_per_class_metrics_and_flags():
    labels = np.array([0] * 40 + [1] * 40 + [2] * 40)
    base = labels.copy()
    trial = labels.copy()
    trial[:12] = 1  # class 0 loses 12 of 40 (30 points); the others are intact
    trial[45] = 2
    accuracy, precision = class_metrics(trial, labels, 3)
    assert accuracy.tolist() == [70.0, 97.5, 100.0]
    assert precision[1] == pytest.approx(39 / 51 * 100)
    base_acc, _ = class_metrics(base, labels, 3)
    top1_change = ((trial == labels).mean() - 1) * 100
    assert flagged_classes(base_acc, accuracy, np.bincount(labels), top1_change) == [0]
    worse, better = flips(base, trial, labels)
    assert worse.tolist() == list(range(12)) + [45] and better.size == 0


@pytest.mark.slow
def test_report_on_a_stored_study_of_ten_thousand_trials(tmp_path):
    from edgetune.searcher.report import write_report

    # A journal file: stored like SQLite, but 10,000 trials go in within seconds (SQLite: ~3 min,
    # which bench/report_scale.py measures together with the report's time on it).
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(tmp_path / "big.log")))
    study = optuna.create_study(study_name="big", storage=storage, directions=["minimize", "maximize"])
    rng = np.random.default_rng(0)
    distributions = {param_name(SPARSITY, f"layer{i}"): optuna.distributions.FloatDistribution(0, 0.8, step=0.05) for i in (1, 2, 3)}
    trials = []
    for _ in range(10_000):
        params = {k: float(np.round(rng.uniform(0, 0.8) / 0.05) * 0.05) for k in distributions}
        latency = 2.0 - sum(params.values()) / 2 + rng.normal(0, 0.02)
        top1 = 99 - max(params.values()) ** 3 * 5 + rng.normal(0, 0.2)
        trials.append(optuna.trial.create_trial(params=params, distributions=distributions, values=[latency, top1],
                                                user_attrs={"latency_ms": latency, "top1": top1, "params": 1000,
                                                            "flops": 2000, "size_bytes": 3000,
                                                            "seconds": {"fine_tune": 20.0, "measure": 2.0}}))
    study.add_trials(trials)
    study.set_user_attr("spec", {"study.targets": ["latency", "top1"]})
    for key, value in {"latency_ms": 2.0, "top1": 99.0, "params": 2000, "flops": 4000, "size_bytes": 6000}.items():
        study.set_user_attr(f"baseline_{key}", value)
    stored = optuna.load_study(study_name="big", storage=storage)
    files = write_report(stored, tmp_path / "out")
    report = files[0].read_text()
    assert "10000 complete trials, 0 collapsed, 0 failed; targets: latency, top1.\n" in report

    # the front table: the baseline, then exactly pareto.front's trials, in its order, with their own figures
    table = report.split("## Pareto front\n\n", 1)[1].split("\n\n", 1)[0].splitlines()
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in table]
    assert cells[2] == ["baseline", "2.000", "", "99.00", "", "2,000", "4,000", "6,000", "uncompressed"]  # no memory: no column
    rows = cells[3:]
    front = pareto.front(stored)
    assert [int(row[0]) for row in rows] == [r.number for r in front]
    for row, expected in zip(rows, front):
        assert row[1] == f"{expected.attrs['latency_ms']:.3f}" and row[3] == f"{expected.attrs['top1']:.2f}"
    # ... and that front is the right one: the non-dominated trials (latency down, Top-1 up), less those the
    # baseline (2.0 ms, 99 %) dominates, found here by a sweep of the trials sorted by latency
    latency, top1 = np.array([t.values for t in trials]).T
    best, expected_front = -np.inf, set()
    for i in np.lexsort((-top1, latency)):
        if top1[i] > best:
            best = top1[i]
            if not (latency[i] >= 2.0 and top1[i] <= 99.0 and (latency[i] > 2.0 or top1[i] < 99.0)):
                expected_front.add(int(i))
    assert expected_front and {r.number for r in front} == expected_front
    assert "## Parameter importances" in report


def test_worst_class_drop_ignores_absent_classes():
    from edgetune.searcher.trial import worst_class_drop

    assert worst_class_drop([100.0, 90.0, float("nan")], [97.0, 92.0, 50.0]) == 3.0


REPORT_IN_A_FRESH_PROCESS = """
import sys
from pathlib import Path
import numpy as np, optuna
from edgetune.searcher.params import SPARSITY, param_name
from edgetune.searcher.report import write_report
optuna.logging.set_verbosity(optuna.logging.WARNING)
study = optuna.create_study(directions=["minimize", "maximize"])
rng = np.random.default_rng(0)
for _ in range(30):
    x = float(rng.uniform(0, 0.8))
    latency, top1 = 2.0 - x, 99 - 5 * x ** 3 + float(rng.normal(0, 0.1))
    study.add_trial(optuna.trial.create_trial(
        params={param_name(SPARSITY, "layer1"): x},
        distributions={param_name(SPARSITY, "layer1"): optuna.distributions.FloatDistribution(0, 0.8)},
        values=[latency, top1], user_attrs={"latency_ms": latency, "top1": top1, "params": 1, "flops": 2, "size_bytes": 3}))
study.set_user_attr("spec", {"study.targets": ["latency", "top1"]})
files = write_report(study, Path(sys.argv[1]))
print(sorted(f.name for f in files), "sklearn" in sys.modules)
"""


def test_report_draws_its_plots_and_ranks_parameters_without_scikit_learn(tmp_path):
    # scikit-learn's import was 2-4 s of a cold report; only Optuna's fANOVA (unused) needs it
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", REPORT_IN_A_FRESH_PROCESS, str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["['front.html',", "'front.png',", "'hypervolume.png',", "'report.md']", "False"]
    report = (tmp_path / "report.md").read_text()
    assert "## Parameter importances (PED-ANOVA)" in report and f"| {param_name(SPARSITY, 'layer1')} | 1.00 | 1.00 |" in report
    assert (tmp_path / "front.png").read_bytes()[:4] == b"\x89PNG"


def test_plot_children_are_forked_only_where_no_thread_pool_can_hold_a_lock(monkeypatch):
    import importlib
    import sys

    from edgetune.searcher.report_plots import start_method

    importlib.import_module("torch")  # a process that has run a study has PyTorch's (and OpenVINO's) threads

    assert start_method() == "spawn"  # a fork here once hung a test's report for good
    for name in ("torch", "openvino"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    assert start_method() == ("fork" if sys.platform == "linux" else "spawn")  # a cold `tune report`


def test_a_plot_that_fails_in_its_process_fails_the_report(tmp_path):
    from edgetune.searcher.report_plots import PlotInputs, Plotter

    def inputs(**changed):
        given = dict(title="t", latency=np.array([1.0, 2.0]), top1=np.array([90.0, 95.0]),
                     on_front=np.array([True, True]), baseline=(2.5, 96.0), hover=["trial 0", "trial 1"],
                     history=[0.5, 1.0])
        return PlotInputs(**{**given, **changed})

    broken = Plotter()
    broken.draw(inputs(latency=np.array([1.0])), tmp_path)  # arrays of different lengths
    with pytest.raises(RuntimeError, match="drawing the report's plots failed: IndexError"):
        broken.result()
    plotter = Plotter()
    plotter.draw(inputs(), tmp_path)
    assert sorted(p.name for p in plotter.result()) == ["front.html", "front.png", "hypervolume.png"]
    html = (tmp_path / "front.html").read_text()
    assert "trial 1" in html and "Pareto front" in html and "baseline" in html
    unused = Plotter()
    children = [process for process, _, _ in unused._children]
    unused.close()  # its children read end-of-file and exit: nothing left running
    assert len(children) == 2 and not any(process.is_alive() for process in children)


def study_with_a_front_model_far_below_the_baseline(storage: str | None = None):
    """A study (in memory by default) whose front ends in a fast model 38.6 points below the baseline (as the demo's)."""
    study = optuna.create_study(study_name="far", directions=["minimize", "maximize"], storage=storage)
    distributions = {param_name(INNER, "layer1"): optuna.distributions.IntDistribution(1, 4)}
    for number, (latency, top1) in enumerate([(0.9, 99.0), (0.6, 98.5), (0.4, 97.0), (0.2, 60.3), (0.8, 90.0)]):
        study.add_trial(optuna.trial.create_trial(
            params={param_name(INNER, "layer1"): number % 4 + 1}, distributions=distributions, values=[latency, top1],
            user_attrs={"latency_ms": latency, "top1": top1, "params": 1, "flops": 2, "size_bytes": 3,
                        "artifact_id": f"model-{number}"}))
    study.set_user_attr("spec", {"study.targets": ["latency", "top1"]})
    for key, value in {"latency_ms": 1.0, "top1": 98.9, "params": 2, "flops": 4, "size_bytes": 6}.items():
        study.set_user_attr(f"baseline_{key}", value)
    return study


def test_the_report_leaves_out_front_models_below_the_top1_floor_and_labels_the_rest(tmp_path):
    from edgetune.searcher import report

    study = study_with_a_front_model_far_below_the_baseline()
    data = report.collect(study)
    assert [row.number for row in data.front] == [3, 2, 1, 0]
    files = report.write_report(study, tmp_path)
    text = files[0].read_text()
    table = text.split("## Pareto front\n\n", 1)[1].split("\n\n", 1)[0]
    assert [line.split("|")[1].strip() for line in table.splitlines()[3:]] == ["2", "1", "0"]
    assert "Not shown: front trial 3 (-38.60) loses more than 5 Top-1 points (--max-top1-drop).\n" in text
    data.front, _ = pareto.within_top1_drop(study, data.front, 5.0)
    data.top1_floor = 93.9
    inputs = report.plot_inputs(data, [])
    assert sorted(label for label in inputs.labels if label) == ["0", "1", "2"]  # each front point names its trial
    assert top1_range(inputs) == pytest.approx((93.4, 99.5))  # from just below the floor, not down to 60.3
    everything = report.write_report(study, tmp_path / "all", max_top1_drop=None)[0].read_text()
    assert "Not shown" not in everything and "| 3 | 0.200 |" in everything


def stored_study_with_class_harm(folder):
    """A study in an SQLite file whose baseline and two front trials have stored predictions on the digits'
    validation images (the trials get some wrong that the baseline gets right): `tune report` draws their
    flips without a trained model. Returns the storage URL."""
    import io
    import zipfile

    from edgetune.searcher.spec import Spec, load_spec
    from edgetune.searcher.storage import AtomicArtifactStore
    from edgetune.searcher.study import load_spec_data, stored_values

    url, store = f"sqlite:///{folder}/harmed.db", folder / "artifacts"
    spec = stored_values(load_spec(overrides={"study.name": "harmed", "study.storage": url,
                                              "study.artifacts": str(store)}))
    labels = load_spec_data(Spec(spec, "stored")).y_val.numpy()  # as the report loads them
    store.mkdir()

    def stored_predictions(artifact_id, wrong):
        predicted = labels.copy()
        predicted[:wrong] = (labels[:wrong] + 1) % 10
        buffer = io.BytesIO()
        np.save(buffer, predicted)
        archive = io.BytesIO()
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr("predictions.npy", buffer.getvalue())
        archive.seek(0)
        AtomicArtifactStore(str(store)).write(artifact_id, archive)

    study = optuna.create_study(study_name="harmed", storage=url, directions=["minimize", "maximize"])
    distributions = {param_name(INNER, "layer1"): optuna.distributions.IntDistribution(1, 4)}
    for number, (latency, top1, wrong) in enumerate([(0.8, 98.5, 3), (0.5, 97.0, 6)]):
        stored_predictions(f"model-{number}", wrong)
        study.add_trial(optuna.trial.create_trial(
            params={param_name(INNER, "layer1"): number + 1}, distributions=distributions, values=[latency, top1],
            user_attrs={"latency_ms": latency, "top1": top1, "params": 1, "flops": 2, "size_bytes": 3,
                        "artifact_id": f"model-{number}"}))
    stored_predictions("baseline", 0)
    study.set_user_attr("spec", spec)
    for key, value in {"latency_ms": 1.0, "top1": 98.9, "params": 2, "flops": 4, "size_bytes": 6,
                       "artifact_id": "baseline"}.items():
        study.set_user_attr(f"baseline_{key}", value)
    return url


def test_a_report_again_leaves_only_its_own_files_and_the_users(tmp_path):
    url, out = stored_study_with_class_harm(tmp_path), tmp_path / "reports"
    folder = out / "harmed"
    first = CliRunner().invoke(app, ["report", "harmed", "--storage", url, "--out", str(out)])
    assert first.exit_code == 0, first.output
    assert sorted(p.name for p in folder.glob("flips-*.png")) == ["flips-trial-0.png", "flips-trial-1.png"]
    assert "(6 files in " in " ".join(first.output.split())
    (folder / "notes.md").write_text("mine")  # a user's files beside the report, one named much like a plot
    (folder / "front-annotated.png").write_bytes(b"mine")

    again = CliRunner().invoke(app, ["report", "harmed", "--storage", url, "--out", str(out), "--no-classes"])
    assert again.exit_code == 0, again.output
    assert "(4 files in " in " ".join(again.output.split())
    assert sorted(p.name for p in folder.iterdir()) == ["front-annotated.png", "front.html", "front.png",
                                                        "hypervolume.png", "notes.md", "report.md"]
    assert "Class-level harm" not in (folder / "report.md").read_text()

    # another database's study of the same name, with no complete trial: its report is one file
    other = f"sqlite:///{tmp_path}/other.db"
    optuna.create_study(study_name="harmed", storage=other, directions=["minimize", "maximize"])
    empty = CliRunner().invoke(app, ["report", "harmed", "--storage", other, "--out", str(out)])
    assert empty.exit_code == 0, empty.output
    assert "(1 file in " in " ".join(empty.output.split())
    assert sorted(p.name for p in folder.iterdir()) == ["front-annotated.png", "notes.md", "report.md"]
    assert (folder / "notes.md").read_text() == "mine" and (out / "plotly.min.js").is_file()  # shared, kept


def test_an_out_that_is_a_file_is_one_line(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    optuna.create_study(study_name="s", storage=url, directions=["minimize", "maximize"])
    (tmp_path / "afile").write_text("mine")
    result = CliRunner().invoke(app, ["report", "--storage", url, "--out", str(tmp_path / "afile")])
    assert result.exit_code == 2, result.output
    assert result.stderr == f"error: --out {tmp_path}/afile: a file, not a folder\n"
    assert (tmp_path / "afile").read_text() == "mine"
