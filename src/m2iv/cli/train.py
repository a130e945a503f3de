"""`m2iv train MODEL --task T --method m2iv --shots 16 --out DIR`: learn in-context vectors."""

from __future__ import annotations

import argparse
import json

from m2iv.cli.common import (
    add_model_args,
    check_out,
    load_from_args,
    name_list,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
)

EXAMPLES = """examples:
  m2iv train sandbox --task sandbox-colour-nonce --shots 16 --out out/colour      # M²IV, default recipe
  m2iv train tiny:qwen2_vl --task jsonl:data.jsonl --steps 50 --w-ce 0 --out out/kl-only
  m2iv train sandbox --task sandbox-colour-nonce --method tv --method-config n_prompts=8 --out out/tv
  m2iv train sandbox --task sandbox-colour-nonce --shots 16 --out out/colour --more-steps 100   # train further
  m2iv train sandbox --config train.yaml --steps 50                               # flags from a file; 50 wins
  torchrun --nproc_per_node 2 -m m2iv.cli.main train ...                          # data parallel
  m2iv eval sandbox --task sandbox-colour-nonce --method m2iv --vectors out/colour --out runs/m2iv
"""


RECIPE_INT = ("steps", "batch_size", "grad_accum", "val_every", "val_size", "checkpoint_every", "seed")
RECIPE_FLOAT = ("lr_vectors", "lr_scales", "weight_decay", "warmup", "clip", "w_mimicry", "w_synergy", "w_ce",
                "temperature", "checkpoint_minutes")
RECIPE_HELP = {
    "steps": "optimizer steps", "batch_size": "training queries per micro-batch",
    "grad_accum": "micro-batches per optimizer step", "val_every": "validate every K steps, keeping the best vectors "
    "(0: no validation, the last vectors are kept)", "val_size": "training queries held out for validation",
    "checkpoint_every": "steps between checkpoints (one is also written after the teacher pass and every "
    "--checkpoint-minutes)", "seed": "seed of the splits, data order and demonstrations",
    "lr_vectors": "learning rate of the vectors", "lr_scales": "learning rate of the weight factors (alpha, beta)",
    "weight_decay": "AdamW weight decay", "warmup": "fraction of the steps with linear warmup before the cosine decay",
    "clip": "gradient-norm clipping", "w_mimicry": "weight of KL(teacher || student) on the answer tokens",
    "w_synergy": "weight of the synergistic loss between each layer's MHA and MLP vectors",
    "w_ce": "weight of the cross-entropy on the answer tokens", "temperature": "distillation temperature",
    "checkpoint_minutes": "minutes between time-based checkpoints"}
TEACHER = ("selection", "draws", "topk", "ensemble", "negatives", "experts")
VECTORS = ("operator", "sites", "token_policy")  # M²IV's layout flags: fields of the method's settings
# Value checks per recipe field (0 is meaningful for val_every/val_size: no validation; for seed; for the weights).
CHECKS = {"val_every": non_negative_int, "val_size": non_negative_int, "seed": non_negative_int,
          "temperature": positive_float, "checkpoint_minutes": positive_float}
# Flag spellings that differ from the field name: --batch-size is queries per forward pass in every command, so
# the training batch is --train-batch-size here as in `m2iv bench`.
FLAGS = {"batch_size": "train-batch-size"}


def recipe_flag(name: str) -> str:
    return "--" + FLAGS.get(name, name.replace("_", "-"))


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train in-context vectors (M²IV) from the N-shot ICL teacher",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    p.add_argument("--task", required=True, help="task to train on: a name from `m2iv tasks`, jsonl:FILE or a task "
                   ".json (docs/your-own-data.md)")
    p.add_argument("--method", default="m2iv", help="trainable method: m2iv (default), live, mimic, i2cl, hificl, or "
                   "an extraction method (tv, fv, icv, mtv, ...; docs/methods.md)")
    p.add_argument("--out", required=True, help="vector directory to write (a sibling DIR.train keeps checkpoints)")
    p.add_argument("--data-root", default=None, help="folder of the official benchmark files (or $M2IV_DATA); "
                   "`m2iv tasks` lists which tasks need it and the files they read")
    p.add_argument("--train-queries", type=positive_int, default=None,
                   help="cap on the task's training queries (the teacher pass reads each once; default the task's "
                        "own, e.g. 1000)")
    _add_run_args(p)
    _add_teacher_args(p)
    _add_recipe_args(p)
    _add_vector_args(p)
    add_condition_args(p)
    p.set_defaults(func=run)


def _add_run_args(p) -> None:
    """Resuming, continuing or overwriting a run, trackers and a YAML file of flags."""
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    again.add_argument("--overwrite", action="store_true",
                       help="delete the run in --out (its vectors and checkpoints) and train afresh")
    again.add_argument("--more-steps", type=positive_int, default=None, metavar="N",
                       help="train the finished run in --out N steps further (a new warmup + cosine cycle); repeat "
                            "its command with this flag")
    p.add_argument("--report-to", type=name_list, default=[], metavar="TRACKER[,TRACKER...]",
                   help="send each step's losses to tensorboard, wandb and/or trackio (offline; see "
                        "m2iv.train.tracking)")
    p.add_argument("--config", default=None, metavar="FILE.yaml",
                   help="flag values from a YAML file (keys are flag names: task, steps, lr-vectors, ...); a flag "
                        "on the command line wins")


# Recipe flags default to "not given" (SUPPRESS): a value the user typed always wins, even one equal to a default;
# what is not typed is left to the method's own recipe (`Method.recipe_defaults`, resolved in methods/spec.py).
UNSET = argparse.SUPPRESS


def _add_teacher_args(p) -> None:
    """The N-shot teacher: its shots, demonstrations, logits kept and experts."""
    from m2iv.train.config import TeacherConfig

    t, unset = TeacherConfig(), UNSET
    p.add_argument("--shots", type=non_negative_int, default=unset, help=f"teacher shots (default {t.shots}; "
                   "extraction methods: demonstrations per prompt, default the method's own)")
    p.add_argument("--selection", default=unset, choices=["random", "fixed", "rices"],
                   help=f"default {t.selection}")
    p.add_argument("--draws", type=positive_int, default=unset,
                   help=f"demonstration sets per training query (default {t.draws})")
    p.add_argument("--topk", type=non_negative_int, default=unset,
                   help=f"teacher logits kept per token (0: full distribution; default {t.topk})")
    p.add_argument("--ensemble", type=positive_int, default=unset,
                   help=f"contexts per teacher target (many-shot; default {t.ensemble})")
    p.add_argument("--negatives", default=unset, choices=["icl", "zero-shot"],
                   help="zero-shot: train queries labelled meta.condition=false towards the plain model's own answer "
                        "(contrastive training; default icl)")
    p.add_argument("--experts", default=unset, type=lambda v: [x for x in v.split(",") if x], metavar="TASK[,TASK]",
                   help="a teacher of several experts: one ICL context per task's demonstration pool, combined as a "
                        "product (e.g. a capitals task and a French task for French capitals)")
    p.add_argument("--with-vectors", default=None, metavar="DIR",
                   help="train on top of these vectors (injected and frozen under the student: sequential training)")


def _add_recipe_args(p) -> None:
    """The optimisation recipe, one flag per TrainConfig field."""
    from m2iv.train.config import TrainConfig

    d, unset = TrainConfig(), UNSET
    g = p.add_argument_group("optimisation (defaults: the method's own recipe, else these)")
    for name in RECIPE_INT:
        g.add_argument(recipe_flag(name), dest=name, type=CHECKS.get(name, positive_int), default=unset,
                       help=f"{RECIPE_HELP[name]} (default {getattr(d, name)})")
    for name in RECIPE_FLOAT:
        g.add_argument(recipe_flag(name), dest=name, type=CHECKS.get(name, non_negative_float), default=unset,
                       help=f"{RECIPE_HELP[name]} (default {getattr(d, name)})")
    g.add_argument("--synergy", default=unset, choices=["decorrelation", "barlow", "none"],
                   help=f"synergistic loss between the MHA and MLP vectors (default {d.synergy})")
    g.add_argument("--bf16", action="store_true", default=unset, help="train under bfloat16 autocast")


def _add_vector_args(p) -> None:
    """Where and how M²IV's vectors act, and any method's settings."""
    unset = UNSET
    m = p.add_argument_group("vectors (M²IV; other methods take --method-config)")
    m.add_argument("--operator", default=unset, choices=["linear", "additive", "norm_preserving"],
                   help="default linear")
    m.add_argument("--sites", default=unset,
                   help="comma-separated sites (attn, mlp, attn_head, layer); default attn,mlp")
    m.add_argument("--token-policy", default=unset, choices=["all", "text", "query", "generated", "last"],
                   help="default all")
    m.add_argument("--method-config", action="append", default=[], metavar="KEY=VALUE",
                   help="a field of the method's settings (e.g. site=layer for live, n_trials=50 for mtv); repeatable")

def add_condition_args(p) -> None:
    """The flags that fit a condition (train --condition, library condition)."""
    c = p.add_argument_group("condition (the vectors act only on prompts that fire it; fitted on training queries)")
    c.add_argument("--condition", action="store_true",
                   help="fit a condition: positives are the task's training queries labelled meta.condition=true "
                        "(negatives: false), or all of them against --condition-negatives")
    c.add_argument("--condition-negatives", default=None, metavar="TASK",
                   help="a task whose training queries the vectors must leave alone")
    c.add_argument("--condition-kind", default="direction", choices=["direction", "prototype"],
                   help="diff-in-means direction (default) or the positives' prototype")
    c.add_argument("--condition-pool", default="auto", choices=["auto", "last", "mean"],
                   help="take the prompt's last token, or the mean over its tokens (default auto: the better one on "
                        "out-of-fold training queries)")
    c.add_argument("--condition-layer", type=non_negative_int, default=None,
                   help="read this decoder layer (default: the best on held-out training queries)")
    c.add_argument("--condition-similarity", default="cosine", choices=["cosine", "cast"],
                   help="cosine to the direction (default) or CAST's cos(h, tanh(Ph))")
    c.add_argument("--condition-recall", type=positive_float, default=None, metavar="R",
                   help="threshold keeping at least R of the positives out of fold, fewest false alarms among those "
                        "(default: the best balanced accuracy); e.g. 0.975 for a refusal vector")


def fit_condition_from_args(args, lm, task, splits):
    """The condition the --condition flags ask for, fitted on `splits`' training queries."""
    from m2iv.data.tasks import get_task
    from m2iv.train.condition import condition_for_task

    negatives = None
    if args.condition_negatives:
        negatives = get_task(args.condition_negatives).splits(args.data_root, seed=getattr(args, "seed", 0))["train"]
    layers = None if args.condition_layer is None else [args.condition_layer]
    return condition_for_task(lm, task, splits, negatives, layers=layers, pool_how=args.condition_pool,
                              kind=args.condition_kind, similarity=args.condition_similarity,
                              seed=getattr(args, "seed", 0), recall=args.condition_recall)


def recipe_from_args(args) -> dict:
    """The recipe fields the user typed (and only those), with the teacher's as a nested dict."""
    given = vars(args)
    recipe = {k: given[k] for k in (*RECIPE_INT, *RECIPE_FLOAT, "synergy", "bf16") if k in given}
    teacher = {k: given[k] for k in TEACHER if k in given}
    if "topk" in teacher:
        teacher["topk"] = teacher["topk"] or None
    if teacher:
        recipe["teacher"] = teacher
    return recipe


def method_config_from_args(method_name: str, config_cls, args) -> dict:
    """The method settings the user typed: --method-config KEY=VALUE pairs (JSON values where they parse, checked
    against the field's type) and M²IV's layout flags."""
    from dataclasses import fields

    from m2iv.errors import M2IVError

    given = vars(args)
    typed = {k: given[k] for k in VECTORS if k in given}
    if "sites" in typed:
        typed["sites"] = typed["sites"].split(",")
    if config_cls is None:
        if typed or args.method_config:
            raise M2IVError(f"method {method_name!r} has no settings to set with --method-config or --sites/--operator")
        return {}
    kinds = {f.name: f.type for f in fields(config_cls)}
    bad = sorted(set(typed) - set(kinds))
    if bad:
        raise M2IVError(f"--{bad[0].replace('_', '-')} is not a setting of {method_name}; valid --method-config keys: "
                        f"{', '.join(sorted(kinds))}")
    values = dict(typed)
    for pair in args.method_config:
        key, sep, raw = pair.partition("=")
        if not sep or key not in kinds:
            raise M2IVError(f"--method-config {pair!r}: use KEY=VALUE with KEY one of {', '.join(sorted(kinds))}")
        values[key] = parse_value(key, raw, str(kinds[key]))
    return values


def parse_value(key: str, raw: str, kind: str):
    """`raw` as the field's declared type (from its annotation string), or a one-line error."""
    from m2iv.errors import M2IVError

    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    base = kind.replace(" ", "").split("|")
    accepts = {"int": lambda v: isinstance(v, int) and not isinstance(v, bool),
               "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
               "bool": lambda v: isinstance(v, bool), "str": lambda v: isinstance(v, str),
               "None": lambda v: v is None, "list": lambda v: isinstance(v, list)}
    known = [accepts[b.split("[")[0]] for b in base if b.split("[")[0] in accepts]
    if known and not any(check(value) for check in known):
        raise M2IVError(f"--method-config {key}={raw}: expected {kind}")
    return float(value) if base == ["float"] else value


def _method_options(args: argparse.Namespace) -> dict:
    """Everything the command line says of the method: its settings, the recipe and where to write."""
    from m2iv.methods import METHODS

    cls = METHODS.get(args.method)
    options = {"out": args.out, "train_config": recipe_from_args(args), "report_to": args.report_to,
               "method_config": method_config_from_args(args.method, getattr(cls, "config_cls", None), args)}
    if "shots" in vars(args):
        options["shots"] = args.shots
    if "seed" in vars(args):
        options["seed"] = args.seed
    if args.with_vectors:
        options["with_vectors"] = args.with_vectors
    if "experts" in vars(args):
        options["teacher_experts"] = list(args.experts)  # resolved to their demonstration pools by the method
        options["data_root"] = args.data_root
    return options


def _trainable(name: str, options: dict):
    """The method, its settings resolved (their errors come before the model loads), if it trains at all."""
    from m2iv.errors import M2IVError
    from m2iv.methods import METHODS, get_method
    from m2iv.methods.base import LoadedVectors

    method = get_method(name, options)
    if not isinstance(method, LoadedVectors) or not method.trainable:
        names = [n for n in METHODS if METHODS.get(n).fits()]
        raise M2IVError(f"method {name!r} has nothing to train; trainable methods: {', '.join(names)}")
    return method


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from m2iv.data.tasks import get_task
    from m2iv.train.session import plan, previous_run
    from m2iv.train.tracking import check_report_to

    task = get_task(args.task)
    if args.train_queries:
        task = replace(task, n_train=args.train_queries)
    check_report_to(args.report_to)
    options = _method_options(args)
    _trainable(args.method, options)
    check_out(args.out, folder=True)
    splits = task.splits(args.data_root, seed=getattr(args, "seed", 0))  # bad data costs no model load
    prev = previous_run(args.out)
    overrides = plan(prev, resume=args.resume, overwrite=args.overwrite, more_steps=args.more_steps,
                     steps=getattr(args, "steps", None))
    if overrides is None:
        print(f"{args.out} is finished ({prev.where()}); nothing to do (--more-steps N trains it further)")
        return 0
    if args.resume:
        print(f"resuming {prev.workdir} at step {prev.step} of {prev.steps}", flush=True)
    elif args.more_steps:
        print(f"continuing {args.out} from step {prev.steps} to {overrides['steps']}", flush=True)
    method = _trainable(args.method, {**options, "train_config": {**options["train_config"], **overrides}})
    lm = load_from_args(args)
    _, info = method.train(lm, task, splits)
    report = {"out": args.out, "best": info.get("best"), "teacher_acc_train":
              info.get("teacher", {}).get("accuracy_train"), "steps_done": info.get("steps_done"),
              "train_seconds": info.get("train_seconds")}
    if args.condition or args.condition_negatives:
        report["condition"] = _add_condition(args, lm, task, splits)
    print(json.dumps(report, indent=2))
    print(f"finished: {previous_run(args.out).where()}")
    return 0


def _add_condition(args: argparse.Namespace, lm, task, splits: dict) -> dict:
    """Fit the vectors' condition on the task's labelled training queries and save it with them."""
    from m2iv.vectors.format import load_vectors, resave

    cond = fit_condition_from_args(args, lm, task, splits)
    vectors, config = load_vectors(args.out, adapter=lm.adapter)
    resave(args.out, vectors.with_condition(cond), config, adapter=lm.adapter)
    report = {k: cond.fit[k] for k in ("heldout_tpr", "heldout_tnr", "heldout_balanced_accuracy")}
    report["layer"] = cond.layer
    return report
