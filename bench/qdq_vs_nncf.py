"""int8 from QAT's own scales (Q/DQ) against NNCF's second calibration, on the same trained models.

    python -m bench.qdq_vs_nncf [--trials 8] [--seed 0] [--set key=value ...]

For the spec (default: the embedded default, ResNet-56 on digits, OpenVINO CPU), ``--trials``
models are proposed by a seeded random sampler over the study's space (proposals without an int8
group are skipped), shrunk and fine-tuned quantization-aware as a trial would (the fine-tune scaled
by the FLOPs removed). Each trained model is then deployed twice, back to back, in alternating
order: ``nncf`` (what ``search.quantization = "qat"`` deploys: NNCF calibrates the int8 groups again)
and ``qdq`` (``"qat-qdq"``: the scales QAT trained with, as quantize/dequantize ops). Both are
evaluated on the validation split on the device and timed by the paired protocol against the
baseline, as trials are. Printed: per model, Top-1, latency × baseline and deployment seconds of
both routes; the last line the medians of the differences.
"""
from __future__ import annotations

import copy
import statistics
import sys
import tempfile
from dataclasses import replace

import optuna
import torch

from bench.common import parser as make_parser, spec_overrides
from edgetune.objectives.groups import compute_layers
from edgetune.objectives.pipeline import PhaseClock, deploy_and_measure, device_plan_for, shrink, trial_epochs
from edgetune.objectives.qdq import with_learned_int8
from edgetune.objectives.quantize import qat_finetune
from edgetune.searcher.space import suggest_plan
from edgetune.searcher.spec import load_spec
from edgetune.searcher.study import prepare


def proposals(spec, prepared, seed: int):
    """Trial plans from a seeded random sampler over the study's space, those with an int8 group only."""
    sampler = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    while True:
        plan = suggest_plan(sampler.ask(), spec, prepared.context.groups, prepared.space)
        if plan.int8_groups:
            yield plan


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], help="spec override, e.g. device.threads=1")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        overrides = {"study.storage": f"sqlite:///{tmp}/routes.db", "study.name": "routes",
                     "study.artifacts": f"{tmp}/artifacts", "search.recipes": False, **spec_overrides(args.set)}
        spec = load_spec(None, overrides)
        prepared = prepare(spec, on_status=lambda s: print(s, file=sys.stderr, flush=True))
        ctx = prepared.context
        rows = []
        for number, plan in zip(range(args.trials), proposals(spec, prepared, args.seed)):
            model = copy.deepcopy(ctx.baseline).eval()
            shrink(model, ctx, plan, PhaseClock(None))
            device_plan = device_plan_for(model, ctx, plan)
            epochs = trial_epochs(model, ctx, plan)
            settings = replace(plan.finetune, epochs=epochs, seed=spec["study.seed"] + number)
            torch.manual_seed(settings.seed)
            _, scales = qat_finetune(model, compute_layers(model, list(device_plan.int8_modules)), ctx.data.x_train,
                                     ctx.data.y_train, settings, ctx.teacher_logits if settings.distill > 0 else None)
            routes = {"nncf": (model, device_plan),
                      "qdq": (with_learned_int8(model, scales), replace(device_plan, int8_scales="model", calibration=None))}
            result = {}
            for route in (["nncf", "qdq"] if number % 2 == 0 else ["qdq", "nncf"]):  # neither always goes first
                clock = PhaseClock(None)
                on_device, route_plan = routes[route]
                measured = deploy_and_measure(on_device, ctx, route_plan, clock)
                measured.deployment.close()
                result[route] = (measured.attributes["top1"], measured.attributes["latency_vs_baseline"],
                                 clock.seconds["deploy"])
            groups = ", ".join(sorted(plan.int8_groups))
            rows.append((number, groups, epochs, result))
            print(f"model {number} ({groups}; {epochs} epochs): " + "; ".join(
                f"{r} Top-1 {t:.2f}, latency x{l:.3f}, deploy {d:.1f} s" for r, (t, l, d) in result.items()),
                file=sys.stderr, flush=True)
    print(f"## {spec['model.name']} on {spec['data.name']}: int8 by NNCF calibration (nncf) or QAT's own scales "
          f"(qdq), {len(rows)} models, seed {args.seed}; baseline Top-1 {prepared.baseline['top1']:.2f}%\n")
    print("| model | int8 groups | epochs | Top-1 nncf | Top-1 qdq | latency × base nncf | qdq | deploy s nncf | qdq |")
    print("|---|---|---|---|---|---|---|---|---|")
    for number, groups, epochs, r in rows:
        print(f"| {number} | {groups} | {epochs} | {r['nncf'][0]:.2f} | {r['qdq'][0]:.2f} | {r['nncf'][1]:.3f} | "
              f"{r['qdq'][1]:.3f} | {r['nncf'][2]:.1f} | {r['qdq'][2]:.1f} |")
    top1 = statistics.median(r["qdq"][0] - r["nncf"][0] for *_, r in rows)
    latency = statistics.median(r["qdq"][1] / r["nncf"][1] for *_, r in rows)
    deploy = statistics.median(r["qdq"][2] - r["nncf"][2] for *_, r in rows)
    print(f"\nqdq against nncf, median over {len(rows)} models: Top-1 {top1:+.2f} points, latency ×{latency:.3f}, "
          f"deploy {deploy:+.1f} s")


if __name__ == "__main__":
    main()
