"""Does distillation from the baseline lift a shrunk model's Top-1 at equal fine-tune length?

    python -m bench.distillation --task default --epochs 1 2 4 --seeds 0 1
    python -m bench.distillation --task cifar --epochs 1 2 --seeds 0
    python -m bench.distillation --task default --epochs 1 --inner-shares 1 0.8 --no-recipes   # light structures

For one task (the search benchmark's: ResNet-56 on digits, or ResNet-20 on cifar10-12k), the
cached baseline is shrunk to the recipes' uniform shares of every dimension (blocks per stage,
stream and inner widths kept at 2/3 and 1/3, l1), as a trial would, then fine-tuned in float from
the same pruned weights with the same seed twice: on the labels alone, and distilled from the
baseline's logits (``--weight``, ``--temperature``). ``--inner-shares`` adds the uniform sweep's
light structures (only inner widths, that share kept; 1: the baseline itself fine-tuned further).
Top-1 is measured in PyTorch on the validation split. Prints a Markdown table: structure, epochs,
FLOPs share, Top-1 without and with distillation (median over seeds) and the difference.
"""
from __future__ import annotations

import copy
import sys

import numpy as np
import torch

from bench.common import CIFAR, DISTILL, parser as make_parser, training_threads
from edgetune.objectives.evaluate import topk_accuracy, torch_logits
from edgetune.objectives.finetune import TrainSettings, train
from edgetune.objectives.models import flops_and_params
from edgetune.objectives.pipeline import TrialContext, PhaseClock, shrink
from edgetune.objectives.structure import block_importance, residual_stages
from edgetune.searcher.params import Choices, decode
from edgetune.searcher.recipes import recipes
from edgetune.searcher.spec import load_spec
from edgetune.searcher.space import build_space, plan_of
from edgetune.searcher.study import RANKING_IMAGES, baseline_settings, data_id, derive_groups, get_baseline, group_rules, load_spec_data

TASKS = {"default": {}, "cifar": CIFAR}  # the search benchmark's tasks


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--task", choices=list(TASKS), default="default")
    parser.add_argument("--epochs", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--weight", type=float, default=DISTILL["finetune.distill"])
    parser.add_argument("--temperature", type=float, default=DISTILL["finetune.temperature"])
    parser.add_argument("--multiple", type=int, default=8, help="channel multiple of the widths")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--inner-shares", type=float, nargs="*", default=[], metavar="SHARE",
                        help="also the uniform sweep's light structures: only inner widths, this share kept (1 = unpruned)")
    parser.add_argument("--no-recipes", action="store_true", help="only the --inner-shares structures")
    args = parser.parse_args()
    training_threads(args.threads)
    spec = load_spec(overrides=TASKS[args.task])
    data = load_spec_data(spec)
    baseline, _ = get_baseline(spec["model.name"], data, data_id(spec), baseline_settings(spec), spec["model.checkpoint"],
                               on_epoch=lambda e, loss: print(f"baseline epoch {e + 1}: loss {loss:.3f}", file=sys.stderr))
    groups = derive_groups(baseline, group_rules(spec))
    stages = residual_stages(baseline)
    importance = block_importance(baseline, stages, data.x_val[:RANKING_IMAGES], data.y_val[:RANKING_IMAGES])
    context = TrialContext(baseline, data, groups, device=None, stages=stages, block_importance=importance)
    space = build_space(spec, baseline, groups, stages, ["f32"], args.multiple)
    labels = data.y_val.numpy()
    base_top1 = topk_accuracy(torch_logits(baseline, data.x_val), labels)
    base_flops = flops_and_params(baseline, data.example_input(2))[0]
    rows = []
    structures = [] if args.no_recipes else [(r.name, decode(r.params)) for r in recipes(space, groups, ["l1"])
                                              if r.name.startswith("uniform") and "int8" not in r.name]
    structures += [(f"inner {share:g}", Choices(inner={g: w.kept_at(share) for g, w in space.inner.items() if w.searched}))
                   for share in args.inner_shares]
    for name, choices in structures:
        plan = plan_of(choices, spec, groups, space)
        pruned = copy.deepcopy(baseline).eval()
        shrink(pruned, context, plan, PhaseClock(None))
        share = flops_and_params(pruned, data.example_input(2))[0] / base_flops
        for epochs in args.epochs:
            result = {}
            for distill in (0.0, args.weight):
                scores = []
                for seed in args.seeds:
                    model = copy.deepcopy(pruned)
                    settings = TrainSettings(epochs, spec["finetune.lr"], spec["finetune.batch_size"], seed=seed,
                                             distill=distill, temperature=args.temperature)
                    torch.manual_seed(seed)
                    train(model, data.x_train, data.y_train, settings,
                          teacher_logits=context.teacher_logits if distill else None)
                    scores.append(topk_accuracy(torch_logits(model, data.x_val), labels))
                result[distill] = scores
            ce, kd = float(np.median(result[0.0])), float(np.median(result[args.weight]))
            rows.append((name, epochs, share, ce, kd, result))
            print(f"{name}, {epochs} epochs: CE {ce:.2f}, distilled {kd:.2f}", file=sys.stderr, flush=True)
    print(f"## distillation: {spec['model.name']} on {data.name} (baseline Top-1 {base_top1:.2f}), weight {args.weight}, "
          f"T = {args.temperature}, seeds {', '.join(map(str, args.seeds))}\n")
    print("| structure | epochs | FLOPs share | Top-1 labels only | Top-1 distilled | difference | per seed (labels / distilled) |")
    print("|---|---|---|---|---|---|---|")
    for name, epochs, share, ce, kd, result in rows:
        seeds = "; ".join(f"{a:.2f} / {b:.2f}" for a, b in zip(result[0.0], result[args.weight]))
        print(f"| {name} | {epochs} | {share:.2f} | {ce:.2f} | {kd:.2f} | {kd - ce:+.2f} | {seeds} |")


if __name__ == "__main__":
    main()
