"""``tune``: the command line of edgetune (typer + rich)."""
from __future__ import annotations

import collections
import functools
import gc
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from .spec import Spec, SpecError, load_spec, parse_override
from .storage import DEFAULT_STORAGE, STORAGE_ENV

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="edgetune: search per-layer-group compression settings, measured on the real device.")
# Written to a file (a long study under nohup), rich would wrap every table row at 80 columns.
console = Console(width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else 200)
STORAGE_OPTION = typer.Option(DEFAULT_STORAGE, "--storage", metavar="URL", envvar=STORAGE_ENV, show_default=False,
                              help=f"SQLAlchemy URL of the study database (default: ${STORAGE_ENV}, else {DEFAULT_STORAGE}).")


def _print_version(asked: bool) -> None:
    if asked:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"edgetune {version('edgetune')}")
        except PackageNotFoundError:  # run from a source tree that was never installed
            typer.echo("edgetune (not installed: no version)")
        raise typer.Exit()


@app.callback()
def _options(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                          help="Print edgetune's version and exit.")) -> None:
    """edgetune: search per-layer-group compression settings, measured on the real device."""
    # Every command, in the console script, its worker processes and typer's test runner alike.
    from .log_setup import quiet_libraries

    quiet_libraries()


def _user_errors() -> tuple[type[BaseException], ...]:
    from edgetune.devices import DeviceError
    from edgetune.objectives.baseline import CheckpointError
    from edgetune.objectives.data import DataError
    from edgetune.objectives.groups import GroupError
    from edgetune.objectives.models import ModelError

    from .storage import StorageError

    from .artifacts import ArtifactError
    from .export import ExportError
    from .local_workers import WorkerFailed

    return (SpecError, DataError, ModelError, DeviceError, GroupError, CheckpointError, StorageError, ExportError,
            WorkerFailed, ArtifactError)


def user_errors_are_one_line(command):
    """Errors a user can cause end the command with one line on stderr and exit code 2."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except _user_errors() as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(2) from None

    return wrapper


# The flags that set a spec key (every key: --set KEY=VALUE).
FLAG_KEYS = {"target": "study.targets", "model": "model.name", "checkpoint": "model.checkpoint", "data": "data.name",
             "data_dir": "data.dir", "device": "device.name", "trials": "study.trials", "sampler": "study.sampler",
             "storage": "study.storage", "study_name": "study.name", "seed": "study.seed",
             "max_top1_drop": "study.max_top1_drop", "max_class_drop": "study.max_class_drop", "workers": "study.workers",
             "max_latency": "study.max_latency_ms", "min_speedup": "study.min_speedup", "image_size": "data.image_size",
             "artifacts": "study.artifacts"}


def _overrides(**named) -> dict:
    result = {FLAG_KEYS[k]: v for k, v in named.items() if k in FLAG_KEYS and v is not None}
    if "study.targets" in result:
        result["study.targets"] = [t.strip() for t in result["study.targets"].split(",") if t.strip()]
    for item in named.get("set") or []:
        key, value = parse_override(item)
        result[key] = value
    return result


def _load_spec(spec_file: Optional[Path], from_env: dict[str, tuple[str, str]] | None = None, **named) -> Spec:
    """The spec with the command line's flags and --set items (``named``) over ``from_env`` (key: the variable,
    its value) over the file; a bad value is named as the user gave it: ``--trials (spec key study.trials): ...``."""
    from_env = from_env or {}
    overrides = {key: value for key, (_, value) in from_env.items()} | _overrides(**named)
    try:
        return load_spec(spec_file, overrides)
    except SpecError as error:
        set_keys = {parse_override(item)[0] for item in named.get("set") or []}
        given = {key: f"${variable}" for key, (variable, _) in from_env.items()}
        given |= {key: f"--{name.replace('_', '-')}" for name, key in FLAG_KEYS.items() if named.get(name) is not None}
        for key, source in given.items():
            prefix = f"spec key '{key}'"
            if key not in set_keys and str(error).startswith(prefix):
                raise SpecError(f"{source} (spec key {key}){str(error)[len(prefix):]}") from None
        raise


@app.command()
@user_errors_are_one_line
def start(
    spec_file: Optional[Path] = typer.Option(None, "--spec", metavar="FILE",
                                             help="Study spec (TOML); default: the embedded studies/default.toml."),
    target: Optional[str] = typer.Option(None, metavar="LIST",
                                         help="Objectives in order, e.g. latency,top1 (latency, top1, size, params, flops, memory, energy)."),
    model: Optional[str] = typer.Option(None, metavar="NAME",
                                        help="Model: resnet20/32/44/56, a torchvision classifier (`tune models`) or file.py:factory."),
    checkpoint: Optional[str] = typer.Option(None, metavar="FILE",
                                             help="Baseline weights (state dict; loaded with weights_only=True)."),
    data: Optional[str] = typer.Option(None, metavar="NAME", help="Data set: digits, cifar10 or imagefolder."),
    data_dir: Optional[str] = typer.Option(None, metavar="DIR", help="Folder of the data set (cifar10, imagefolder)."),
    device: Optional[str] = typer.Option(None, metavar="NAME", help="Target device, e.g. openvino:CPU (`tune devices`)."),
    trials: Optional[int] = typer.Option(None, metavar="N", help="Run until the study has this many trials."),
    sampler: Optional[str] = typer.Option(None, metavar="NAME", help="auto, tpe, nsga2 or random."),
    storage: Optional[str] = typer.Option(None, metavar="URL", help=f"SQLAlchemy URL of the study database (default: ${STORAGE_ENV}, "
                                                     f"else the spec file's study.storage, else {DEFAULT_STORAGE})."),
    study_name: Optional[str] = typer.Option(None, metavar="NAME", help="Study name (default: MODEL-DATA, e.g. resnet56-digits); "
                                                        "an existing study is resumed."),
    seed: Optional[int] = typer.Option(None, metavar="N", help="Seed of the sampler and of training."),
    workers: Optional[int] = typer.Option(None, metavar="N", help="Local worker processes (several need PostgreSQL or MySQL)."),
    max_top1_drop: Optional[float] = typer.Option(None, help="Trials losing more Top-1 points are infeasible."),
    max_class_drop: Optional[float] = typer.Option(None, metavar="POINTS",
                                                   help="Trials losing more points on any class are infeasible."),
    max_latency: Optional[float] = typer.Option(None, metavar="MS", help="Latency limit in ms: slower trials are infeasible, "
                                                           "timed before fine-tuning and skip it."),
    min_speedup: Optional[float] = typer.Option(None, metavar="X",
                                                help="Speed-up over the baseline a trial must reach (as --max-latency)."),
    artifacts: Optional[str] = typer.Option(None, metavar="DIR", help="Artifact store folder (study.artifacts; resuming: the study's "
                                                       "store as this host sees it)."),
    set_: Optional[list[str]] = typer.Option(None, "--set", metavar="KEY=VALUE",
                                             help="Override any spec key: --set finetune.epochs=3"),
):
    """Run (or resume) a compression study and print its Pareto front."""
    from .locks import SEVERAL_WORKERS_NEED_A_SERVER, StudyLocks
    from .storage import is_sqlite

    # the flag, then the variable, win over a spec file's study.storage
    from_env = {"study.storage": (STORAGE_ENV, os.environ[STORAGE_ENV])} if os.environ.get(STORAGE_ENV) else {}
    spec = _load_spec(spec_file, from_env, target=target, model=model, checkpoint=checkpoint, data=data, data_dir=data_dir,
                      device=device, trials=trials, sampler=sampler, storage=storage, study_name=study_name, seed=seed,
                      workers=workers, max_top1_drop=max_top1_drop, max_class_drop=max_class_drop,
                      max_latency=max_latency, min_speedup=min_speedup, artifacts=artifacts, set=set_)
    if spec["study.workers"] > 1 and is_sqlite(spec["study.storage"]):
        raise SpecError(f"--workers {spec['study.workers']}: {SEVERAL_WORKERS_NEED_A_SERVER}")
    _check_train_device(spec)
    from .progress import status_lines
    from .study import check_new_space, validate

    # Everything a user can get wrong (device, data, model, checkpoint, storage, a space of one point)
    # fails before the header.
    try:
        with status_lines(console, "checking the device, data and model") as checking:
            checked = validate(spec, on_status=checking.update)
            check_new_space(spec, checked)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/] before the study started")
        raise typer.Exit(130) from None
    console.print(f"study [bold]{spec['study.name']}[/]: {spec['model.name']} on {spec['data.name']}, "
                  f"device {spec['device.name']}, targets {','.join(spec.targets)}, sampler {spec.sampler}, "
                  f"{spec['study.trials']} trials" + (f", {spec['study.workers']} workers" if spec["study.workers"] > 1 else ""))
    with StudyLocks(spec["study.storage"], spec["study.name"]).exclusive_worker():
        study = _run_interruptible(spec, functools.partial(_run_study, checked=checked))
    _print_front(study)


@app.command()
@user_errors_are_one_line
def worker(
    study_name: str = typer.Argument(..., help="The study to join (started with `tune start`)."),
    storage: str = STORAGE_OPTION,
    artifacts: Optional[str] = typer.Option(None, metavar="DIR",
                                            help="The study's artifact store as this host sees it (default: the study's)."),
    threads: int = typer.Option(0, metavar="N", help="Training threads (0: PyTorch's default)."),
    quiet: bool = typer.Option(False, "--quiet", help="Print nothing but errors (used by `tune start --workers`)."),
    set_: Optional[list[str]] = typer.Option(None, "--set", metavar="KEY=VALUE", help="Where this host trains: --set train.device=cuda:1 "
                                                                "(train.* keys only; the rest is the study's)."),
):
    """Join a study from this host and run its trials until the study has them all."""
    from .locks import StudyLocks
    from .storage import load_study

    if threads:
        import torch

        torch.set_num_threads(threads)
    spec = _stored_spec_of(load_study(storage, study_name), storage, artifacts, set_)
    _check_train_device(spec)
    with StudyLocks(spec["study.storage"], spec["study.name"]).exclusive_worker():
        _run_interruptible(spec, functools.partial(_run_study, joining=True), quiet=quiet)


def _check_train_device(spec) -> None:
    """A training device this host lacks: one line before anything starts (not after the baseline)."""
    from .study import train_on

    train_on(spec)


def _stored_spec_of(study, storage: str, artifacts: Optional[str], set_: Optional[list[str]] = None):
    """The spec a study was started with, as this host joins it: its storage URL, its view of the
    artifact store, one worker, and where this host trains (``--set train.*``: the only keys a
    joining process may change, since every other one makes its trials another study's)."""
    from . import record
    from .spec import stored_spec

    stored = record.spec_values(study)
    if not stored:
        raise SpecError(f"study '{study.study_name}' has no edgetune spec; start it with `tune start`")
    from .storage import StorageError

    overrides = {"study.storage": storage, "study.workers": 1}
    try:  # an older study's relative store, found from here or beside its database
        overrides["study.artifacts"] = record.artifacts_dir(study, artifacts, storage)
    except StorageError:
        if artifacts:
            raise
    for item in set_ or []:
        key, value = parse_override(item)
        if not key.startswith("train."):
            raise SpecError(f"--set {key}: a process joining study '{study.study_name}' may set only where it trains "
                            "(train.device, train.amp); the rest is the study's spec")
        overrides[key] = value
    return stored_spec(stored, overrides)


def _run_interruptible(spec, run, quiet: bool = False, total: int | None = None, label: str = "trials"):
    """Run with a progress display (``total`` of ``label``: the study's trial budget unless given);
    Ctrl-C or SIGTERM fails the running trial cleanly and exits 130."""
    import signal

    from .progress import StudyProgress
    from .storage import redact
    from .worker import stop_requested

    def interrupt(signum, frame):
        stop_requested.set()  # the worker stops at its next step even if a library swallows the interrupt
        raise KeyboardInterrupt

    stop_requested.clear()
    previous = {number: signal.signal(number, interrupt) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        with StudyProgress(console, spec["study.trials"] if total is None else total, 0, quiet=quiet,
                           label=label) as progress:
            return run(spec, progress)
    except KeyboardInterrupt:
        console.print(f"[yellow]interrupted[/]: finished trials are stored in {redact(spec['study.storage'])}; "
                      "run the same command to resume")
        raise typer.Exit(130) from None
    finally:
        for number, handler in previous.items():
            if handler is not None:  # None: a handler not set from Python, which cannot be put back
                signal.signal(number, handler)
        stop_requested.clear()


def _run_study(spec, progress, joining: bool = False, checked=None):
    from .runner import run_study

    def show_baseline(prepared) -> None:
        base = prepared.baseline
        if not progress.quiet:
            console.print(f"baseline ({prepared.baseline_source}): latency {base['latency_ms']:.3f} ms "
                          f"(±{base['latency_ci95_rel'] * 100:.1f}%, {base['latency_runs']} runs), Top-1 {base['top1']:.2f}%, "
                          f"params {base['params']:,}, FLOPs {base['flops']:,}; groups: "
                          + ", ".join(f"{g.name} ({len(g.layers)} layer{'s' * (len(g.layers) > 1)})" for g in prepared.context.groups)
                          + f"; precisions: {', '.join(prepared.precisions)}"
                          + f"; {prepared.space.collapse_note() or f'widths in multiples of {prepared.space.multiple} ({prepared.space.multiple_source})'}"
                          + (f"; stream widths not searched: {prepared.space.stream_error}" if prepared.space.stream_error else ""))

    return run_study(spec, progress, joining=joining, before_trials=show_baseline, checked=checked).study


def _print_front(study, max_top1_drop: float | None = None) -> None:
    """The front as a table; models losing more than ``max_top1_drop`` Top-1 points (default: export's
    and report's floor) named below it."""
    from . import bulk
    from .pareto import DEFAULT_MAX_TOP1_DROP, front, front_table, front_user_attrs, left_out_line, within_top1_drop

    max_top1_drop = DEFAULT_MAX_TOP1_DROP if max_top1_drop is None else max_top1_drop

    trials = bulk.read_trials(study, front_user_attrs(study))
    rows = front(study, trials)
    states = collections.Counter(t.state.name.lower() for t in trials)
    if not states["complete"]:
        seen = ", ".join(f"{n} {state}" for state, n in sorted(states.items())) or "no trials"
        console.print(f"study '{study.study_name}': no complete trial yet ({seen}); the same `tune start` resumes it")
        return
    kept, left_out = within_top1_drop(study, rows, max_top1_drop)
    console.print(front_table(study, trials=trials, rows=kept))
    if left_out:
        console.print(f"not shown: {left_out_line(study, left_out, max_top1_drop)}")


@app.command()
@user_errors_are_one_line
def pareto(
    study_name: Optional[str] = typer.Argument(None, help="Study name (optional if the storage holds one)."),
    storage: str = STORAGE_OPTION,
    max_top1_drop: float = typer.Option(5.0, "--max-top1-drop", metavar="POINTS",
                                        help="Leave out front models that lose more Top-1 points than this (as export and report do)."),
):
    """Print the current Pareto front of a stored study, with deltas against its baseline."""
    from .storage import read_study

    _check_drop(max_top1_drop)
    _print_front(read_study(storage, study_name), max_top1_drop)


app.command("status", help="Same as `tune pareto`.")(pareto)


MAX_TOP1_DROP_OPTION = typer.Option(
    5.0, "--max-top1-drop", metavar="POINTS",  # pareto.DEFAULT_MAX_TOP1_DROP (importing optuna here slows every command)
    help="Leave out front models that lose more Top-1 points than this against the baseline.")


def _check_drop(points: float) -> None:
    if points < 0:
        raise SpecError(f"--max-top1-drop: must be a number of points >= 0, got {points:g}")


def _artifacts_dir(study, given: Optional[str], storage: str) -> str:
    from . import record

    return record.artifacts_dir(study, given, storage)


def _out_folder(out: Path) -> Path:
    """``--out``, made if missing: one line, not a traceback, where it cannot be a folder."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise SpecError(f"--out {out}: a file, not a folder") from None
    except NotADirectoryError:
        raise SpecError(f"--out {out}: a part of the path is a file, not a folder") from None
    except OSError as error:
        raise SpecError(f"--out {out}: cannot make the folder ({error.strerror})") from None
    return out


@app.command()
@user_errors_are_one_line
def export(
    study_name: Optional[str] = typer.Argument(None, help="Study name (optional if the storage holds one)."),
    pareto: bool = typer.Option(False, "--pareto", help="Export every model on the Pareto front."),
    trial: Optional[list[int]] = typer.Option(None, "--trial", metavar="N",
                                              help="Export this trial (repeatable; with --pareto: as well)."),
    out: Path = typer.Option(Path("exports"), "--out", metavar="DIR", help="Folder to write trial-N/ folders into."),
    max_top1_drop: float = MAX_TOP1_DROP_OPTION,
    storage: str = STORAGE_OPTION,
    artifacts: Optional[str] = typer.Option(None, metavar="DIR", help="Artifact store folder (default: the study's)."),
):
    """Write the deployable models of chosen trials, with a manifest (metrics, versions, checksums)."""
    from .export import choose_trials, export_trial
    from .pareto import left_out_line
    from .storage import load_study

    _check_drop(max_top1_drop)
    study = load_study(storage, study_name)
    chosen_trials, left_out = choose_trials(study, trial, pareto, max_top1_drop)
    store = _artifacts_dir(study, artifacts, storage)  # before any folder is made
    if left_out:
        console.print(f"[yellow]not exported[/]: {left_out_line(study, left_out, max_top1_drop)}")
    _out_folder(out)
    for chosen in chosen_trials:
        folder = export_trial(study, chosen, store, out)
        a = chosen.user_attrs
        console.print(f"trial {chosen.number}: latency {a['latency_ms']:.3f} ms, Top-1 {a['top1']:.2f}% -> {folder}")


@app.command()
@user_errors_are_one_line
def report(
    study_name: Optional[str] = typer.Argument(None, help="Study name (optional if the storage holds one)."),
    out: Path = typer.Option(Path("reports"), "--out", metavar="DIR", help="Folder of the report (a subfolder per study)."),
    storage: str = STORAGE_OPTION,
    artifacts: Optional[str] = typer.Option(None, metavar="DIR", help="Artifact store folder (default: the study's)."),
    classes: bool = typer.Option(True, help="Class-level harm of the front (loads the data set)."),
    max_top1_drop: float = typer.Option(5.0, "--max-top1-drop", metavar="POINTS",
                                        help="Show front models down to this many Top-1 points below the baseline "
                                             "(the plot's Top-1 axis starts there)."),
):
    """Write the study's report: front plots (PNG, HTML), tables, hypervolume, importances, class harm."""
    from . import record
    from .report import write_report
    from .report_plots import Plotter
    from .storage import read_study

    _check_drop(max_top1_drop)
    plotter = Plotter()  # first: matplotlib's and plotly's imports overlap opening and reading the study
    study = read_study(storage, study_name)
    splits, store = None, None
    stored = record.spec_values(study)
    # Class-level harm compares stored predictions: without the baseline's there is nothing to compare,
    # and the data set (torch, the image files) is not loaded at all.
    if classes and stored and record.baseline(study).get("artifact_id"):
        from edgetune.objectives.data import DataError

        from .storage import StorageError

        try:
            store = _artifacts_dir(study, artifacts, storage)  # before anything is written
        except StorageError as error:
            raise StorageError(f"{error} (class-level harm reads it), or leave that out with --no-classes") from None

        from .study import load_spec_data

        try:
            splits = load_spec_data(Spec(stored, "stored"))
        except DataError as error:
            console.print(f"[yellow]class-level harm skipped[/]: {error}")
    folder = _out_folder(out) / study.study_name
    from .progress import status_lines

    with status_lines(console, "writing the report"):
        # one plotly.min.js in --out for every study's front.html
        files = write_report(study, folder, store, splits, plotter, max_top1_drop=max_top1_drop,
                             plotly_js="../plotly.min.js")
    console.print(f"report: {files[0]} ({len(files)} file{'s' * (len(files) != 1)} in {folder})")


@app.command()
@user_errors_are_one_line
def finalize(
    study_name: Optional[str] = typer.Argument(None, help="Study name (optional if the storage holds one)."),
    epochs: int = typer.Option(10, metavar="N", help="Fine-tune epochs for each finalized model."),
    trial: Optional[list[int]] = typer.Option(None, "--trial", metavar="N",
                                              help="Finalize this trial (repeatable); default: the front."),
    storage: str = STORAGE_OPTION,
    artifacts: Optional[str] = typer.Option(None, metavar="DIR",
                                            help="The study's artifact store as this host sees it (default: the study's)."),
    set_: Optional[list[str]] = typer.Option(None, "--set", metavar="KEY=VALUE",
                                             help="Where to train: --set train.device=cuda:1 (train.* keys only)."),
):
    """Fine-tune the front's models longer; each becomes a new trial (finalized_from = the original)."""
    from .finalize import finalize as run_finalize
    from .finalize import originals
    from .storage import load_study
    from .study import prepare

    if epochs < 1:
        raise SpecError(f"--epochs: must be an integer >= 1, got {epochs}")
    found = load_study(storage, study_name)
    chosen = originals(found, trial)  # an unknown or unfinished trial fails here, before anything is loaded
    spec = _stored_spec_of(found, storage, artifacts, set_)
    _check_train_device(spec)

    def run(spec, progress):
        prepared = prepare(spec, on_status=progress.status, joining=True)
        # the trials chosen above (the front is not computed twice)
        return run_finalize(prepared, spec, epochs, [t.number for t in chosen], on_status=progress.status,
                            on_done=progress.budget_spent), prepared.study

    from .locks import StudyLocks

    with StudyLocks(spec["study.storage"], spec["study.name"]).exclusive_worker():  # SQLite: one process at a time
        pairs, study = _run_interruptible(spec, run, total=len(chosen), label="models finalized")
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    for original, finalized in pairs:
        before, after = by_number[original].user_attrs, by_number[finalized].user_attrs
        if "top1" in after:
            console.print(f"trial {original} -> {finalized}: Top-1 {before['top1']:.2f} -> {after['top1']:.2f}%, "
                          f"latency {before['latency_ms']:.3f} -> {after['latency_ms']:.3f} ms")
        else:
            console.print(f"trial {original} -> {finalized}: [red]failed[/]: {after.get('failure')}")
    _print_front(study)


@app.command()
@user_errors_are_one_line
def dashboard(
    storage: str = STORAGE_OPTION,
    artifacts: Optional[str] = typer.Option(None, metavar="DIR", help="Artifact store whose trial models the UI shows (default: the "
                                                       "studies' own, found from any folder as by `tune report`)."),
    host: str = typer.Option("127.0.0.1", metavar="ADDRESS", help="Address to bind; 127.0.0.1 keeps it on this machine."),
    port: int = typer.Option(8080, metavar="N", help="Port."),
):
    """Serve optuna-dashboard on the study database, with the trials' models from the studies' artifact store."""
    import optuna_dashboard
    from rich.markup import escape

    from .storage import artifact_store, open_storage, redact, require_database

    require_database(storage)
    store = open_storage(storage)
    folder, not_attached = _dashboard_artifacts(store, storage, artifacts)
    models = artifact_store(folder) if folder else None  # only a folder that is there: none is created
    console.print(f"optuna-dashboard on http://{host}:{port} for {escape(redact(storage))}"
                  + (f", models from {escape(folder)}" if folder else "") + " (Ctrl-C stops it)", soft_wrap=True)
    if not_attached:  # each one line, however long, in a log too
        console.print(f"[yellow]{'some models' if folder else 'models'} not attached[/]: {escape(not_attached)}",
                      soft_wrap=True)
    try:
        optuna_dashboard.run_server(store, host=host, port=port, artifact_store=models)
    except OSError as error:
        raise SpecError(f"cannot serve on {host}:{port}: {error.strerror or error}") from None
    except KeyboardInterrupt:
        pass


def _dashboard_artifacts(store, storage: str, given: Optional[str]) -> tuple[Optional[str], str]:
    """The artifact store the dashboard serves models from (None: none), and why models are not attached
    ("": all are). ``--artifacts`` wins; else each study's own store, found as `tune report` and `tune export`
    find it. optuna-dashboard serves one store: where the studies' stores differ, the newest study's is
    served and the others are named. A store that is not there is never created (an empty one would hide it)."""
    from . import record
    from .storage import redact

    if given:
        path = Path(given).expanduser()
        return (str(path), "") if path.is_dir() else (None, f"--artifacts {given}: no such folder (none is created)")
    studies = store.get_all_studies()  # oldest first; their attributes, no trials
    if not studies:
        return None, (f"{redact(storage)} holds no study yet; start the dashboard again once one has run, "
                      "or name a store with --artifacts DIR")
    found, missing, chosen = {}, [], None  # chosen: the newest study's store that is there
    for study in studies:
        folder, why = record.find_artifacts_dir(study, storage)
        if folder is None:
            missing.append(why)
        else:
            chosen = str(Path(folder).resolve())
            found.setdefault(chosen, []).append(study.study_name)
    reasons = list(missing)
    for folder, names in found.items():
        if folder != chosen:
            one = len(names) == 1
            reasons.append(f"{'study' if one else 'studies'} {', '.join(repr(n) for n in names)} keep{'s' * one} "
                           f"{'its' if one else 'their'} models in {folder}")
    if not reasons:
        return chosen, ""
    if not chosen:
        return None, "; ".join(reasons) + f"; name {'it' if len(reasons) == 1 else 'one'} with --artifacts DIR"
    served = found[chosen]
    reasons.append(f"one store is served, {chosen} ({'study' if len(served) == 1 else 'studies'} "
                   f"{', '.join(repr(n) for n in served)}); --artifacts DIR chooses another")
    return chosen, "; ".join(reasons)


@app.command()
@user_errors_are_one_line
def groups(
    spec_file: Optional[Path] = typer.Option(None, "--spec", metavar="FILE", help="Study spec (TOML)."),
    model: Optional[str] = typer.Option(None, metavar="NAME", help="Model: resnet20/32/44/56, a torchvision classifier (`tune models`) "
                                                   "or file.py:factory (default: the spec's, resnet56)."),
    num_classes: int = typer.Option(10, metavar="N", help="Classes of the classifier head."),
    image_size: Optional[int] = typer.Option(None, metavar="PIXELS",
                                             help="Input size that counts FLOPs (default: the spec's data.image_size, 32)."),
    set_: Optional[list[str]] = typer.Option(None, "--set", metavar="KEY=VALUE",
                                             help="Override spec keys (search.groups, search.exclude)."),
):
    """Show the layer groups of a model (layers, parameters, FLOPs share) and every dimension a study
    searches on it, with its range on the spec's device."""
    import torch

    from edgetune.objectives.groups import derive_groups, describe_groups
    from edgetune.objectives.models import create_model
    from edgetune.objectives.structure import residual_stages, stream_pruning_error

    from .space import allowed_precisions, build_space, channel_multiple, dimension_rows
    from .study import group_rules, make_device

    if num_classes < 2:
        raise SpecError(f"--num-classes: must be an integer >= 2, got {num_classes}")
    spec = _load_spec(spec_file, model=model, image_size=image_size, set=set_)
    image_size = spec["data.image_size"] or 32
    net = create_model(spec["model.name"], num_classes)
    found = derive_groups(net, group_rules(spec))
    table = Table(title=f"layer groups of {spec['model.name']}")
    for column in ("group", "layers", "params", "params share", "FLOPs share"):
        table.add_column(column, overflow="fold")
    for row in describe_groups(net, found, torch.zeros(2, 3, image_size, image_size)):
        table.add_row(row["name"], "\n".join(row["layers"]), f"{row['params']:,}", f"{row['params_share']:.1%}",
                      f"{row['flops_share']:.1%}")
    console.print(table)
    info = make_device(spec).info()
    precisions = allowed_precisions(spec, info)
    multiple, source = channel_multiple(spec, info, precisions)
    stages, example = residual_stages(net), torch.zeros(2, 3, image_size, image_size)
    error = stream_pruning_error(net, stages, example, multiple) if stages and spec["search.stream_width"] else None
    space = build_space(spec, net, found, stages, precisions, multiple, source, error)
    dims = Table(title=f"search dimensions on {info.name} (widths in multiples of {multiple}, from the {source})")
    for column in ("parameter", "dimension", "range"):
        dims.add_column(column, overflow="fold")
    for row in dimension_rows(spec, found, space):
        dims.add_row(row["parameter"], row["dimension"], row["range"])
    dims.caption = space.collapse_note()
    console.print(dims)


@app.command()
@user_errors_are_one_line
def devices():
    """List the devices available on this host, with the facts that change a timing."""
    from edgetune.devices import available_devices, create_device

    from edgetune.devices.host import pinned_note

    table = Table(title="devices on this host", caption=" ".join(f"as on the host {v}" for v in pinned_note().values()))
    table.add_column("device", no_wrap=True)  # the name --device takes: never folded
    for column in ("full name", "runtime", "precisions (channel granularity)", "capabilities"):
        table.add_column(column, overflow="fold")
    for name in available_devices():
        info = create_device(name).info()
        steps = {p: info.granularity(p) for p in info.precisions}
        precisions = (f"{', '.join(steps)} (×{steps[info.precisions[0]]})" if len(set(steps.values())) == 1
                      else ", ".join(f"{p} ×{g}" for p, g in steps.items()))
        runtime = info.runtime.split("-")[0]  # "openvino 2026.4.1", not its build tag (trials record it whole)
        table.add_row(info.name, info.full_name, runtime, precisions, info.extra.get("capabilities", "").replace(",", ", "))
    console.print(table)


@app.command("device-agent")
@user_errors_are_one_line
def device_agent(
    device: str = typer.Option("openvino:CPU", metavar="NAME", help="The local device to serve."),
    host: str = typer.Option("127.0.0.1", metavar="ADDRESS", help="Address to bind; 127.0.0.1 unless other hosts must reach it."),
    port: int = typer.Option(8765, metavar="N", help="Port."),
    threads: int = typer.Option(0, metavar="N", help="Inference threads (0: each model at its fastest count)."),
    max_upload_mb: int = typer.Option(256, metavar="MIB", help="Largest model or array accepted, in MiB."),
    latency_ci: float = typer.Option(0.02, metavar="SHARE", help="Stop timing once the 95% CI of the median is this tight."),
    latency_max_seconds: float = typer.Option(5.0, metavar="SECONDS", help="Time limit of one measurement."),
):
    """Serve a device over HTTP for studies on other hosts (token: $EDGETUNE_AGENT_TOKEN)."""
    from edgetune.devices.agent import serve

    serve(device, host, port, threads, max_upload_mb, latency_ci, latency_max_seconds, say=console.print)


@app.command()
@user_errors_are_one_line
def models(contains: Optional[str] = typer.Argument(
        None, help="Only names containing this text; or your own file.py, package.module or module: its factories.")):
    """List the model names `--model` accepts, or the factories of your own file or module."""
    from edgetune.objectives.models import ModelError, list_factories, list_models

    if contains and (contains.endswith(".py") or contains.endswith(":") or "." in contains and "/" not in contains):
        source = contains.rstrip(":")
        found = list_factories(source)
        if not found:
            raise ModelError(f"{source} defines no public function or nn.Module class to use as --model {source}:NAME")
        console.print("\n".join(found))
        return
    names = [n for n in list_models() if not contains or contains in n]
    if names:
        console.print(" ".join(names))
    else:
        console.print(f"no model name contains {contains!r}"
                      + (f"; your file's factories: `tune models {contains}.py`" if Path(f"{contains}.py").is_file() else ""))
    console.print("[dim]your own model: --model path/to/file.py:factory or package.module:factory "
                  "(`tune models path/to/file.py` lists a file's factories)[/]")


def main() -> None:  # console script entry point
    try:
        app(prog_name="tune")
    finally:
        # The interpreter's exit collects garbage over every object still alive: after reading 10,000
        # trials that was 0.4 s of a 3 s report. Frozen objects are skipped (they are still freed).
        gc.freeze()


if __name__ == "__main__":
    main()
