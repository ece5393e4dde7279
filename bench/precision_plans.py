"""All-f32 vs all-int8 vs a mixed precision plan, side by side on the same pruned model.

    python -m bench.precision_plans [--model resnet56] [--sparsity 0.5] [--mixed layer2,layer3]
                                    [--study resnet56-digits --storage sqlite:///edgetune.db]

Trains (or loads from the cache) the baseline of the default study, prunes every group to the
same sparsity with NNI and fine-tunes it once, then deploys that one model on the OpenVINO CPU
at each plan, measuring Top-1 on the deployed model and latency by the protocol, interleaved
(round-robin, `--rounds` times) so drift on the machine hits every plan alike. The mixed plan is
``--mixed`` or, with ``--study``, the int8 groups of the mixed-precision front model of that
study with the best Top-1. Prints a Markdown table of latency, speed-up, Top-1 and size.
"""
from __future__ import annotations

import argparse
import copy

import numpy as np

from bench.common import pruned_inner
from edgetune.devices import PrecisionPlan
from edgetune.objectives.evaluate import topk_accuracy
from edgetune.objectives.finetune import TrainSettings, train
from edgetune.objectives.groups import OTHER
from edgetune.objectives.pipeline import int8_modules
from edgetune.searcher.spec import load_spec
from edgetune.searcher.study import baseline_settings, data_id, derive_groups, get_baseline, group_rules, load_spec_data, make_device


def mixed_from_study(storage: str, name: str) -> tuple[frozenset[str], str]:
    """The fastest mixed-precision model on the study's front within 1 point of the baseline's Top-1."""
    from edgetune.searcher.pareto import baseline, front
    from edgetune.searcher.storage import load_study

    study = load_study(storage, name)
    rows = [r for r in front(study) if len(set((r.attrs.get("precision_plan") or {}).values())) > 1
            and r.attrs["top1"] >= baseline(study)["top1"] - 1.0]
    if not rows:
        raise SystemExit(f"no mixed-precision model within 1 point of the baseline on the front of study {name!r}")
    best = min(rows, key=lambda r: r.attrs["latency_ms"])
    plan = best.attrs["precision_plan"]
    print(f"mixed plan from trial {best.number}: {plan}")
    floats = [p for p in plan.values() if p != "int8"]
    return frozenset(g for g, p in plan.items() if p == "int8"), (floats[0] if floats else "f32")


def pruned_model(model_name: str, sparsity: float):
    """The default study's cached baseline of ``model_name``, every group pruned (l1) and fine-tuned as a trial would."""
    spec = load_spec(overrides={"model.name": model_name})
    data = load_spec_data(spec)
    baseline, source = get_baseline(model_name, data, data_id(spec), baseline_settings(spec))
    groups = derive_groups(baseline, group_rules(spec))
    model = pruned_inner(copy.deepcopy(baseline), sparsity, data.example_input(2))
    train(model, data.x_train, data.y_train, TrainSettings(spec["finetune.epochs"], spec["finetune.lr"], spec["finetune.batch_size"]))
    return spec, data, model, groups, source


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet56")
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--mixed", default="layer2,layer3", help="int8 groups of the mixed plan (comma-separated)")
    parser.add_argument("--mixed-float", default="f32", help="float precision of the mixed plan")
    parser.add_argument("--study", help="take the mixed plan from this study's front instead")
    parser.add_argument("--storage", default="sqlite:///edgetune.db")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    spec, data, model, groups, source = pruned_model(args.model, args.sparsity)
    example = data.example_input(2)

    mixed, mixed_float = (mixed_from_study(args.storage, args.study) if args.study
                          else (frozenset(args.mixed.split(",")), args.mixed_float))
    every = frozenset([g.name for g in groups] + [OTHER])
    calibration = data.calibration_subset(spec["data.calibration_size"]).numpy()
    plans = {
        "all f32": PrecisionPlan("f32"),
        "all int8": PrecisionPlan("f32", tuple(int8_modules(model, groups, every)), calibration),
        f"mixed ({mixed_float}, int8: {', '.join(sorted(mixed))})":
            PrecisionPlan(mixed_float, tuple(int8_modules(model, groups, mixed)), calibration),
    }
    device = make_device(spec)
    deployments = {name: device.deploy(model, example, plan) for name, plan in plans.items()}
    labels = data.y_val.numpy()
    top1 = {name: topk_accuracy(d.predict(data.x_val.numpy()), labels) for name, d in deployments.items()}
    medians: dict[str, list[float]] = {name: [] for name in plans}
    for _ in range(args.rounds):  # interleaved: each round measures every plan once
        for name, deployment in deployments.items():
            medians[name].append(deployment.measure_latency().median_ms)

    reference = float(np.median(medians["all f32"]))
    print(f"\n{args.model} on {spec['data.name']}, every group pruned {args.sparsity:.0%} (l1) and fine-tuned "
          f"{spec['finetune.epochs']} epochs; baseline {source}; {device.info().full_name}, {device.info().runtime}\n")
    print("| plan | latency ms (median of rounds) | speed-up vs all f32 | Top-1 % | size KiB | compute layers by precision |")
    print("|---|---|---|---|---|---|")
    for name, deployment in deployments.items():
        median = float(np.median(medians[name]))
        used = deployment.precision_used
        print(f"| {name} | {median:.3f} | {reference / median:.2f}x | {top1[name]:.2f} | "
              f"{deployment.size_bytes / 1024:.0f} | {', '.join(f'{k} {v}' for k, v in sorted(used.items()))} |")
    for deployment in deployments.values():
        deployment.close()


if __name__ == "__main__":
    main()
