"""`sonodiff train RECIPE.toml --out RUN_DIR [--set key=value ...] [--dry-run]` and `sonodiff export`."""

from __future__ import annotations

import json
import sys


def _resolve_recipe(name: str):
    from pathlib import Path

    p = Path(name)
    if p.is_file():
        return p
    repo_recipes = Path(__file__).resolve().parents[2] / "recipes" / f"{name}.toml"
    if repo_recipes.is_file():
        return repo_recipes
    raise FileNotFoundError(f"recipe {name!r} is neither a file nor a recipe name in {repo_recipes.parent}")


def _train(args) -> int:
    from sonodiff.training.config import load_config
    from sonodiff.training.loop import train
    from sonodiff.utils.config import ConfigError

    try:
        cfg = load_config(_resolve_recipe(args.recipe), args.set or [])
    except (ConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("resolved config:")
    print(json.dumps(cfg.to_dict(), indent=2))
    result = train(cfg, args.out, dry_run=args.dry_run)
    if not args.dry_run:
        print(f"done: step {result.step}, last loss {result.losses[-1] if result.losses else float('nan'):.4f}, "
              f"{result.skipped_steps} skipped steps; checkpoint {result.checkpoint}")
    return 0


def _export(args) -> int:
    from sonodiff.training.export import export_run

    try:
        out = export_run(args.run_dir, args.out, args.checkpoint, ema_sigma_rel=args.ema_sigma_rel,
                         guide=None if args.guide is None else "" if args.guide == "none" else args.guide,
                         guidance_scale=args.guidance_scale, vocoder=args.vocoder)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"exported {args.run_dir} -> {out}")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train (or resume) a model from a TOML recipe",
                       description="Train a diffusion model. Running the same command again on an existing RUN_DIR "
                                   "resumes from its latest checkpoint. Multi-GPU / multi-node: launch with torchrun.")
    p.add_argument("recipe", help="a recipe file or the name of one in recipes/ (e.g. tiny_debug)")
    p.add_argument("--out", required=True, help="run directory (checkpoints, metrics.jsonl, tb/, demos/)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value, e.g. optim.lr=1e-4")
    p.add_argument("--dry-run", action="store_true", help="check config and data, print model size and a step-time "
                                                         "estimate, do not train")
    p.set_defaults(func=_train)
    p = sub.add_parser("export", help="write the inference directory (EMA weights) of a training run")
    p.add_argument("run_dir")
    p.add_argument("--out", required=True, help="model directory to write")
    p.add_argument("--checkpoint", default="latest", help="latest (default), best, or a folder such as step_00001000")
    p.add_argument("--ema-sigma-rel", type=float, default=None, metavar="S",
                   help="export the post-hoc EMA of relative length S (e.g. 0.08), reconstructed from the run's "
                        "train.posthoc_ema snapshots (Karras et al. 2024), instead of the run's EMA")
    p.add_argument("--guide", metavar="CHECKPOINT|none",
                   help="autoguidance: export this checkpoint of the run (e.g. step_00001450) as the guide model "
                        "(MODEL_DIR/guide); 'none': classifier-free guidance (default: the recipe's demo.guide)")
    p.add_argument("--vocoder", metavar="NAME|DIR",
                   help="mel models: the exported model's vocoder (griffin_lim, a shipped vocoder such as vocoder_8k, "
                        "or a vocoder directory; default: the recipe's demo.vocoder)")
    p.add_argument("--guidance-scale", type=float, metavar="W",
                   help="the exported default guidance scale (default: the recipe's demo.guidance_scale)")
    p.set_defaults(func=_export)
