"""The `alviz` command line: parse, build a config, call one function, print the outcome.

Every user mistake ends as a one-line `alviz: error: ...` on stderr and exit status 2 (click's
usage errors included); a diverged run exits 3, Ctrl-C 130.
"""

from __future__ import annotations

import errno
import json
import sys

import click

from .config import METHODS, TrainConfig
from .errors import UserError
from .safeio import describe

#: every data set `--dataset` accepts (tests/test_cli_help.py checks it against alviz.data.DATASET_NAMES)
DATASETS_HELP = ("mnist5k, digits, blobs, mnist, fashion-mnist, cifar10, cifar100, cifar10-5k, cifar100-5k, "
                 "npz:PATH")
_DEF = TrainConfig()


def _d(text: str, default) -> str:
    """Help text ending with the default, for options whose default a preset or config file may
    replace (click's show_default would print None)."""
    return f"{text}  [default: {default}]"


def _config_options(with_seed: bool):
    """The TrainConfig flags shared by `train` and `sweep` (None: the config file's, preset's or
    TrainConfig's value), each with its help and default."""
    src = "; a --config or --preset may set another"
    opts = [
        click.option("--arch", default=None, help=_d("mlp, cnn, vgg, resnet20, resnet32", _DEF.arch + src)),
        click.option("--dataset", default=None, help=_d(DATASETS_HELP, _DEF.dataset + src)),
        click.option("--activation", default=None, help=_d("relu, elu, sigmoid, tanh", _DEF.activation + src)),
        click.option("--depth", type=int, default=None, help=_d("number of components", "the arch's")),
        click.option("--width", type=int, default=None, help=_d("width n of the label path", "the arch's")),
        click.option("--epochs", type=int, default=None, help=_d("training epochs", _DEF.epochs)),
        click.option("--batch-size", type=int, default=None, help=_d("samples per step", _DEF.batch_size)),
        click.option("--lr", type=float, default=None, help=_d("learning rate (Adam unless a preset says)", _DEF.lr)),
    ]
    if with_seed:
        opts.append(click.option("--seed", type=int, default=None,
                                 help=_d("seeds weights, data order and augmentation", _DEF.seed)))
    opts += [
        click.option("--device", default=None, help=_d("auto, cpu, cuda, cuda:N", _DEF.device)),
        click.option("--amp", is_flag=True, default=None, help="bf16 autocast on CUDA  [default: off]"),
        click.option("--variant", default=None, help=_d("AL variant: paper or tanh-ce (old name iclr2022)", _DEF.variant)),
        click.option("--recipe", default=None,
                     help=_d("alviz or authors: the whole training set-up (docs/METHOD.md)", _DEF.recipe + src)),
        click.option("--snapshots", default=None, metavar="SPEC",
                     help=_d("also keep the weights of these epochs: 0,1,2,5 | every:N | log (0,1,2,4,8,... and "
                             "the last); 0 = initialisation", "none")),
        click.option("--data-dir", default=None, help=_d("where torchvision data sets live", _DEF.data_dir)),
        click.option("--on-nan", default=None, help=_d("stop or continue when a loss becomes NaN/inf", _DEF.on_nan)),
    ]

    def deco(f):
        for o in reversed(opts):
            f = o(f)
        return f

    return deco


def _progress(quiet: bool) -> bool:
    """A progress bar only on a terminal; in a log (stderr not a tty) plain lines, one per epoch."""
    return not quiet and sys.stderr.isatty()


class _Group(click.Group):
    """`alviz --help` lists each command's whole first sentence (click cuts them at the width)."""

    def format_commands(self, ctx, formatter):
        rows = []
        for name in self.list_commands(ctx):
            cmd = self.get_command(ctx, name)
            if cmd is not None and not cmd.hidden:
                rows.append((name, cmd.get_short_help_str(limit=1000)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


_GROUPS = {"both": ("al", "bp"), "all": ("al", "bp", "bp-authors")}


def _check_parallel_recipe(cfg) -> None:
    """The pipeline and DDP loops implement alviz's data order, per-epoch schedule and no L2 only."""
    from .models import resolve_shape_defaults

    r = resolve_shape_defaults(cfg)
    cifar_aug = r.augment is True or (r.augment is None and r.dataset.startswith("cifar"))
    missing = [k for k, v in (("schedule: authors", r.schedule == "authors"), ("shuffle: false", r.shuffle is False),
                              ("l2", bool(r.l2)), ("augment_ops: authors", r.augment_ops == "authors" and cifar_aug))
               if v]
    if missing:
        raise UserError(f"--pipeline/--ddp do not implement {', '.join(missing)} (recipe {r.recipe}); train without "
                        "them, or set those keys to alviz's values (schedule: step, shuffle: true, l2: 0, "
                        "augment_ops: crop-flip)")


def _seeds(value: str | None):
    """--seeds "0,1,2" -> [0, 1, 2]: distinct integers 0..MAX_SEED, all checked before anything trains."""
    if value is None:
        return None
    from .presets import check_seeds

    try:
        seeds = [int(s) for s in value.split(",") if s.strip() != ""]
    except ValueError:
        seeds = None
    if not seeds or any(s < 0 for s in seeds):
        raise UserError(f"--seeds must be comma-separated non-negative integers like 0,1,2; received "
                        f"{describe(value)}")
    return check_seeds(seeds, "--seeds")


def _not_both(resume: bool, force: bool) -> None:
    if resume and force:
        raise UserError("--resume continues runs and --force replaces them; received both, choose one")


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(package_name="alviz")
def cli():
    """alviz: train Associated Learning and backprop models, then study their hidden layers.

    Start with `alviz train` then `alviz analyze` (the embedded MNIST subset, offline).
    """


@cli.command()
@click.option("--method", type=click.Choice([*METHODS, "both", "all"]), default=None,
              help=_d("al, bp (matched), bp-authors (the authors' BP), al-e2e (AL's losses end to end), scpl, dgl; "
                      "both = al,bp; all = al,bp,bp-authors", "all; a sweep preset: its own list"))
@_config_options(with_seed=True)
@click.option("--seeds", default=None, help=_d("several seeds, e.g. 0,1,2 (one run per method and seed)", "--seed"))
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help=_d("YAML config; flags override it", "none"))
@click.option("--preset", default=None, help=_d("a named preset (see `alviz presets`)", "none"))
@click.option("--out", default=None, help=_d("experiment folder", "checkpoints/<arch>-<dataset>-<activation>"))
@click.option("--resume", is_flag=True, help="continue unfinished runs from their last checkpoint")
@click.option("--force", is_flag=True, help="replace existing runs in the experiment folder")
@click.option("--threads", type=int, default=None, help=_d("CPU threads for torch", "torch's choice"))
@click.option("--quiet", is_flag=True, help="no progress bar (there is none when stderr is not a terminal)")
@click.option("--pipeline", is_flag=True, help="local rules (al, scpl, dgl): one group of components per torchrun "
              "rank (docs/PARALLEL.md)")
@click.option("--ddp", is_flag=True, help="data parallel over torchrun ranks (DistributedDataParallel), AL or BP")
@click.option("--micro-batches", type=int, default=1, show_default=True, help="--pipeline: micro-batches per batch")
def train(method, config_file, preset, out, resume, force, seeds, threads, quiet, pipeline, ddp, micro_batches,
          **flags):
    """Train models with one or more learning rules (default: AL, matched BP and the authors' BP; MLP on mnist5k)."""
    from . import config as cfgmod
    from .experiment import train_experiment
    from .train import set_threads

    from .presets import load_spec

    _not_both(resume, force)
    spec = load_spec(preset, config_file)  # a preset and/or a config file, with their extra sections
    overrides = {k: v for k, v in flags.items() if v is not None}
    chosen = _GROUPS.get(method or "all", (method,))
    if spec.sweep is not None or spec.differs(chosen):  # a sweep, or methods with their own settings
        _train_spec(spec, overrides, chosen if method else None, _seeds(seeds), out, resume=resume,
                    force=force, threads=threads, quiet=not _progress(quiet), parallel=pipeline or ddp)
        return
    cfg = cfgmod.from_dict(overrides, spec.for_method(chosen[0]) if len(chosen) == 1 else spec.config,
                           source="command line")
    _label_quick(cfg)
    seed_list = _seeds(seeds) or [cfg.seed]
    methods = chosen
    set_threads(threads)
    if pipeline or ddp or micro_batches != 1:
        from .parallel import train_parallel

        if pipeline and ddp:
            raise UserError("--pipeline and --ddp are two ways to parallelise; received both, choose one")
        _check_parallel_recipe(cfg)
        if not (pipeline or ddp):
            raise UserError(f"--micro-batches applies to --pipeline only; received {micro_batches} without it")
        exp, results = train_parallel(cfg, methods, seed_list, out, mode="pipeline" if pipeline else "ddp",
                                      micro_batches=micro_batches, resume=resume, force=force,
                                      progress=_progress(quiet), log=click.echo)
        if exp is None:  # ranks other than 0 report nothing
            return
    else:
        exp, results = train_experiment(cfg, methods, seed_list, out, resume=resume, force=force,
                                        progress=_progress(quiet), log=click.echo)
    for p, r in results:
        if r is None:
            continue
        exits = ""
        if r.exits and len(r.exits) > 1:
            exits = "  exits " + " ".join(f"{a:.4f}" for a in r.exits)
        click.echo(f"{p.cfg.method:>10} seed {p.cfg.seed}: test acc {r.test_acc:.4f}{exits}  "
                   f"({r.seconds:.1f}s)  -> {r.run_dir}")
    click.echo(f"experiment: {exp}   next: alviz analyze {exp}")


@cli.command()
@click.argument("run_dir", type=click.Path())
@click.option("--dataset", default=None, help=_d("data set to evaluate on", "the run's own"))
@click.option("--split", default="test", show_default=True, help="train, test or all")
@click.option("--data-dir", default=None, help=_d("where torchvision data sets live", "the run's"))
@click.option("--batch-size", type=int, default=1024, show_default=True, help="samples per forward pass")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N")
@click.option("--epoch", type=int, default=None,
              help=_d("the weights of this epoch (a snapshot, see train --snapshots)", "the last checkpoint"))
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def evaluate(run_dir, dataset, split, data_dir, batch_size, device, epoch, as_json):
    """Accuracy of a trained run (and AL's accuracy at every exit)."""
    from .checkpoint import load_run
    from .data import load_dataset
    from .train import evaluate as _evaluate
    from .train import resolve_device

    from .checkpoint import check_finite_weights
    from .data import changed_since_training

    dev = resolve_device(device)
    run = load_run(run_dir, dev, epoch=epoch)
    check_finite_weights(run.model, run.path)
    name = dataset or run.config.dataset
    data = load_dataset(name, data_dir=data_dir or run.config.data_dir,
                        test_fraction=run.config.test_fraction, preprocess=run.meta["preprocess"])
    if data.num_classes > int(run.meta["num_classes"]):
        raise UserError(f"{name} has labels up to {data.num_classes - 1} but the model knows "
                        f"{run.meta['num_classes']} classes (0..{int(run.meta['num_classes']) - 1})")
    x, y, _ = data.split(split)
    if batch_size < 1:
        raise UserError(f"--batch-size must be a positive integer; received {batch_size}")
    if len(y) == 0:
        raise UserError(f"the {split} split of {name} holds no samples; choose another --split")
    warning = changed_since_training(run.meta, name, data)
    if warning:
        click.echo(warning, err=True)
    ev = _evaluate(run.model, x, y, batch_size=batch_size, device=dev)
    out = {"run": str(run.path), "method": run.config.method, "epoch": run.epoch, "dataset": name, "split": split,
           "n": len(y), "accuracy": ev["acc"]}
    if "exits" in ev:
        out["exit_accuracy"] = ev["exits"]
    if as_json:
        click.echo(json.dumps(out))
        return
    click.echo(f"{run.path} ({run.config.method}, epoch {run.epoch}) on {name}/{split}, {len(y)} samples: "
               f"accuracy {ev['acc']:.4f}")
    for k, a in enumerate(ev.get("exits", []), start=1):
        click.echo(f"  exit {k}: {a:.4f}")


@cli.command()
@click.argument("run_dir", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def layers(run_dir, as_json):
    """List the extractable layers of a run: role, position on the inference path, match key."""
    from .checkpoint import load_run
    from .extract import describe_layers

    run = load_run(run_dir)
    rows = describe_layers(run.model, run.meta["input_shape"])
    if as_json:
        click.echo(json.dumps({"run": str(run.path), "method": run.config.method, "layers": rows}))
        return
    click.echo(f"{run.path} ({run.config.method}, {run.config.arch}, depth {len(run.model.blocks)})")
    click.echo(f"  {'name':<10s} {'role':<8s} {'position':>8s} {'on path':>7s} {'match':<6s} "
               f"{'output shape':<14s} {'values (gap)':>12s} {'values (flatten)':>16s}")
    for r in rows:
        shape = "x".join(str(s) for s in r["shape"])
        click.echo(f"  {r['name']:<10s} {r['role']:<8s} {r['position']:>8g} {'yes' if r['on_path'] else 'no':>7s} "
                   f"{r['match']:<6s} {shape:<14s} {r['stored']['gap']:>12d} {r['stored']['flatten']:>16d}")
    click.echo("name: for --layers; role: encoder, bridge, decoder or head; position: along the inference path; "
               "on path: used by inference; match: the key that pairs AL and BP layers; output shape: per "
               "sample; values (gap) / (flatten): numbers stored per sample by `alviz extract --pool gap|flatten`")


@cli.command()
@click.argument("run_dir", type=click.Path())
@click.option("--dataset", default=None, help=_d("data set to extract on", "the run's own"))
@click.option("--split", default="test", show_default=True, help="train, test or all")
@click.option("--max-samples", type=int, default=None, help=_d("a seeded stratified sample of this size", "all"))
@click.option("--dtype", default="float32", show_default=True, help="float32 or float16")
@click.option("--layers", "layer_names", default=None, help=_d("comma-separated names (see `alviz layers RUN`)", "all"))
@click.option("--pool", default="gap", show_default=True, help="4-D maps: gap (mean per channel) or flatten")
@click.option("--batch-size", type=int, default=256, show_default=True, help="samples per forward pass")
@click.option("--force", is_flag=True, help="extract again even if a matching set exists")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N")
@click.option("--data-dir", default=None, help=_d("where torchvision data sets live", "the run's"))
def extract(run_dir, dataset, split, max_samples, dtype, layer_names, pool, batch_size, force, device, data_dir):
    """Stream hidden-layer activations of a run (or every run of an experiment) to .npy files."""
    from .experiment import find_runs
    from .extract import extract_run, parse_layers

    names = parse_layers(layer_names)
    runs = find_runs(run_dir)
    if not runs:
        raise UserError(f"no alviz run found at or below {run_dir}")
    if names and len(runs) > 1:  # check every run before extracting any (AL and BP differ in names)
        from .checkpoint import load_run
        from .extract import select_layers

        for r in runs:
            try:
                select_layers(load_run(r).model, names)
            except UserError as e:
                raise UserError(f"{r}: {e}") from None
    for r in runs:
        out = extract_run(r, dataset=dataset, split=split, layers=names, max_samples=max_samples, dtype=dtype,
                          pool=pool, batch_size=batch_size, force=force, device=device, log=click.echo,
                          data_dir=data_dir)
        click.echo(f"activations: {out}")


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--out", default="reports", show_default=True, help="reports go to OUT/<experiment>/")
@click.option("--max-samples", type=int, default=None,
              help=_d("held-out samples to measure (stratified); also caps the training samples", "all"))
@click.option("--train-samples", type=int, default=5000, show_default=True,
              help="training samples the k-NN and linear probe learn from")
@click.option("--tsne-samples", type=int, default=2000, show_default=True, help="points per t-SNE panel")
@click.option("--perplexity", type=float, default=30.0, show_default=True,
              help="t-SNE perplexity (lowered to (points - 1) / 3 for few points)")
@click.option("--no-tsne", is_flag=True, help="skip t-SNE (faster)")
@click.option("--tsne-jobs", type=int, default=1, show_default=True,
              help="openTSNE threads (-1: all cores; 1 is fastest on a busy CPU)")
@click.option("--device", default="auto", show_default=True, help="device for extraction: auto, cpu, cuda, cuda:N")
@click.option("--seed", type=int, default=0, show_default=True, help="seeds samples, probes and t-SNE")
@click.option("--boot", type=int, default=200, show_default=True,
              help="bootstrap replicates per measure and layer (0: no intervals, no verdicts)")
@click.option("--no-similarity", is_flag=True, help="skip the layer-to-layer similarity and its noise floor")
@click.option("--no-snapshots", is_flag=True, help="skip the snapshots of runs that keep them (training dynamics)")
@click.option("--strip-layer", default=None,
              help=_d("layer of the t-SNE strip across snapshot epochs", "the deepest encoder block"))
@click.option("--export", is_flag=True,
              help="also write export/: t-SNE points as CSV and NPZ, and a TensorBoard projector bundle")
def analyze(paths, out, max_samples, train_samples, tsne_samples, perplexity, no_tsne, tsne_jobs, device, seed,
            boot, no_similarity, no_snapshots, strip_layer, export):
    """Measure every layer, draw figures and write reports (default: all experiments under checkpoints/)."""
    from .report import Options
    from .report import analyze as _analyze
    from .train import resolve_device

    opts = Options(max_samples=max_samples, train_samples=train_samples, tsne=not no_tsne,
                   tsne_samples=tsne_samples, perplexity=perplexity, tsne_jobs=tsne_jobs,
                   device=str(resolve_device(device)), seed=seed, boot=boot,
                   similarity=not no_similarity, snapshots=not no_snapshots,
                   strip_layer=strip_layer, export=export).validate()
    folders = _analyze(list(paths), out=out, options=opts, log=click.echo)
    from .report import headline

    for f in folders:  # analyze logged each report line once; the headline of each experiment
        text = headline(f)
        if text:
            click.echo(text)


@cli.command()
@click.argument("a", type=click.Path())
@click.argument("b", type=click.Path())
@click.option("--csv", "csv_path", default=None, help=_d("CSV to write", "OUT/<experiment of A>/compare-A-vs-B.csv"))
@click.option("--out", default="reports", show_default=True, help="report folder root (caches, default CSV)")
@click.option("--max-samples", type=int, default=None, help=_d("held-out samples to measure", "all"))
@click.option("--train-samples", type=int, default=5000, show_default=True,
              help="training samples the k-NN and linear probe learn from")
@click.option("--device", default="auto", show_default=True, help="device for extraction: auto, cpu, cuda, cuda:N")
@click.option("--seed", type=int, default=0, show_default=True, help="seeds samples, probes and the bootstrap")
@click.option("--boot", type=int, default=200, show_default=True,
              help="bootstrap replicates per measure and layer (0: no intervals)")
@click.option("--no-similarity", is_flag=True, help="skip the layer-to-layer CKA / Procrustes / k-NN overlap")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON instead of a table")
def compare(a, b, csv_path, out, max_samples, train_samples, device, seed, boot, no_similarity, as_json):
    """Compare two runs or two experiments layer by layer: A, B, A - B with its paired interval and which
    is better (only where the interval excludes zero), per class, McNemar on the models' predictions, and
    the similarity of aligned layers."""
    from .report import Options, format_compare_extra, format_compare_table
    from .report import compare as _compare
    from .report.files import to_json
    from .train import resolve_device

    opts = Options(max_samples=max_samples, train_samples=train_samples, tsne=False, boot=boot,
                   similarity=not no_similarity, device=str(resolve_device(device)), seed=seed).validate()
    extra: dict = {}
    rows, path = _compare(a, b, out=out, csv_path=csv_path, options=opts, log=lambda m: click.echo(m, err=True),
                          extra_out=extra)
    if as_json:
        click.echo(to_json({"a": str(a), "b": str(b), "rows": rows, **extra, "csv": str(path)}))
        return
    click.echo(format_compare_table([r for r in rows if r.get("class") in (None, "")], str(a), str(b)))
    more = format_compare_extra(extra)
    if more:
        click.echo(more)
    click.echo(f"per-class rows: {sum(1 for r in rows if r.get('class') not in (None, ''))} in the CSV (column class)")
    click.echo(f"csv: {path}")


def _label_quick(cfg) -> None:
    if cfg.quick:
        where = f"preset {cfg.preset}" if cfg.preset else "this config"
        click.echo(f"{where}: QUICK variant, a reduced setting for a CPU (runs are labelled quick: true); "
                   "a check of the pipeline, not the paper's result")


def _echo_sweep(result) -> None:
    from .sweep import summarize

    for line in summarize(result):
        click.echo(line)
    failed = f"; {len(result.failed)} run(s) diverged (see sweep.json)" if result.failed else ""
    click.echo(f"sweep: {result.out} ({result.trained} run(s) trained, {result.skipped} skipped{failed})   "
               f"next: alviz analyze {result.out}")
    if result.failed:
        from .train import Diverged

        raise Diverged(f"{len(result.failed)} run(s) of the sweep diverged, e.g. {result.failed[0]}; "
                       "the others finished (lower --lr, or --on-nan continue)")


def _train_spec(spec, overrides, methods, seeds, out, *, resume, force, threads, quiet, parallel) -> None:
    """`alviz train` for a preset/config with a sweep section or per-method settings."""
    from .sweep import train_spec
    from .train import set_threads

    if parallel:
        what = "a sweep" if spec.sweep is not None else "per-method settings (per_method)"
        raise UserError(f"{spec.name or 'this config'} has {what}; --pipeline/--ddp train one configuration: "
                        "choose one method with --method al or --method bp")
    if spec.sweep is None:  # a sweep labels itself
        _label_quick(spec.config)
    set_threads(threads)
    res = train_spec(spec, overrides, methods, seeds, out, resume=resume, force=force, progress=not quiet,
                     log=click.echo, command=" ".join(["alviz", *sys.argv[1:]]))
    if not isinstance(res, tuple):
        _echo_sweep(res)
        return
    exp, results = res
    for p, r in results:
        if r is not None:
            click.echo(f"{p.cfg.method:>10} seed {p.cfg.seed} (lr {p.cfg.lr:g}): test acc {r.test_acc:.4f}  "
                       f"({r.seconds:.1f}s)  -> {r.run_dir}")
    click.echo(f"experiment: {exp}   next: alviz analyze {exp}")


@cli.command()
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="print the list as JSON")
@click.option("--published", is_flag=True, help="list the registry of published accuracies (alviz/published.py)")
def presets(name, as_json, published):
    """List the presets (`alviz train --preset NAME`), or print preset NAME's YAML file.

    `alviz presets NAME > my.yaml` gives a config to edit and run with `alviz train --config my.yaml`.
    A preset trained with a published recipe's settings is listed with the published numbers.
    """
    from .presets import list_presets, preset_text
    from .published import PUBLISHED, describe, for_preset

    if published:
        if as_json:
            click.echo(json.dumps([p.to_dict() for p in PUBLISHED], indent=1))
            return
        for p in PUBLISHED:
            click.echo(f"{', '.join(p.presets) or '(no preset)'}: {describe(p)}")
        return
    if name:
        click.echo(preset_text(name), nl=False)
        return
    infos = list_presets()
    if as_json:
        click.echo(json.dumps([{**vars(i), "published": [p.to_dict() for p in for_preset(i.name)]} for i in infos],
                              indent=1))
        return
    width = max([len(i.name) for i in infos] + [4])
    click.echo(f"{'name':<{width}}  quick  sweep  description")
    for i in infos:
        click.echo(f"{i.name:<{width}}  {'yes' if i.quick else '-':<5}  {'yes' if i.sweep else '-':<5}  {i.description}")
        for p in for_preset(i.name):
            click.echo(f"{'':<{width}}  published: {describe(p)}")
    click.echo("quick: a reduced CPU variant, labelled quick in every run and report; sweep: trains a grid of "
               "experiments into one folder. `alviz presets NAME` prints a preset's file; `alviz presets "
               "--published` lists the published accuracies with their sources.")


def _methods_opt(value):
    if value is None:
        return None
    if value.strip() in _GROUPS:
        return list(_GROUPS[value.strip()])
    from .presets import check_methods

    return check_methods(value, "--methods")


@cli.command()
@click.option("--grid", "grid", multiple=True, metavar="KEY=V1,V2",
              help="sweep a TrainConfig key over values (repeatable; cells = the product)")
@click.option("--methods", default=None, help=_d("comma list of al, bp, bp-authors, al-e2e, scpl, dgl; both = al,bp; "
              "all = al,bp,bp-authors", "the sweep section's, else al,bp"))
@click.option("--seeds", default=None, help=_d("e.g. 0,1,2", "the sweep section's, else the config's seed"))
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help=_d("YAML config (may hold a sweep section); flags override it", "none"))
@click.option("--preset", default=None, help=_d("a named preset (see `alviz presets`)", "none"))
@_config_options(with_seed=False)
@click.option("--out", default=None, help=_d("sweep folder", "checkpoints/<preset>, else checkpoints/<experiment>-sweep"))
@click.option("--resume", is_flag=True,
              help="continue the sweep in --out (alone: as stored in its sweep.json); re-running the command also does")
@click.option("--force", is_flag=True, help="retrain finished runs (replacing them)")
@click.option("--dry-run", is_flag=True, help="list the cells and runs; train nothing")
@click.option("--threads", type=int, default=None, help=_d("CPU threads for torch", "torch's choice"))
@click.option("--quiet", is_flag=True, help="no progress bar (there is none when stderr is not a terminal)")
def sweep(grid, methods, seeds, config_file, preset, out, resume, force, dry_run, threads, quiet, **flags):
    """Train a grid of experiments into one folder: DIR/<cell>/<method>-seed<k>/ and DIR/sweep.json.

    Example: alviz sweep --grid depth=2,4,6,8 --grid activation=sigmoid,relu --methods al,bp --seeds 0,1,2
    --dataset mnist5k --epochs 10 --out checkpoints/depth-study. Interrupted? Run it again, or
    `alviz sweep --resume --out DIR`: finished runs are skipped, unfinished ones resumed.
    """
    from . import sweep as swmod
    from .presets import load_spec
    from .train import set_threads

    _not_both(resume, force)
    overrides = {k: v for k, v in flags.items() if v is not None}
    grid_values = swmod.parse_grid_args(grid)
    method_list, seed_list = _methods_opt(methods), _seeds(seeds)
    specified = grid or preset or config_file or methods or seeds or (set(overrides) - swmod.FREE_KEYS)
    if resume and not specified:
        if out is None:
            raise UserError("--resume alone continues a stored sweep: give its folder with --out DIR")
        sw = swmod.sweep_from_file(out, overrides)
    else:
        spec = load_spec(preset, config_file)
        if spec.sweep is None and not grid_values and not method_list and not seed_list:
            raise UserError("nothing to sweep: give --grid KEY=V1,V2 (and/or --methods, --seeds), or a preset or "
                            "config with a sweep section (e.g. --preset sigmoid-study)")
        sw = swmod.make_sweep(spec, overrides, grid_values, method_list, seed_list, out)
    runner = swmod.SweepRunner(sw, force=force, progress=_progress(quiet), log=click.echo,
                               command=" ".join(["alviz", *sys.argv[1:]]))
    if dry_run:
        runner.check_folder()
        todo = runner.plan()
        for _, name, p in todo:
            click.echo(f"{name}/{p.run_dir.name}: {p.action}")
        click.echo(f"{len(sw.cells)} cell(s), {len(todo)} run(s), "
                   f"{sum(p.action != 'skip' for _, _, p in todo)} to train, into {sw.out}")
        return
    set_threads(threads)
    _echo_sweep(runner.run())


def main(argv=None) -> int:
    """Entry point: runs the CLI and maps errors to one line and an exit status."""
    from .train import Interrupted

    try:
        cli.main(args=argv, prog_name="alviz", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("alviz: aborted", err=True)
        return 130
    except click.ClickException as e:
        msg = e.format_message().replace("\n", " ")
        ctx = getattr(e, "ctx", None)
        where = f" ({ctx.command_path})" if ctx is not None else ""
        click.echo(f"alviz: error{where}: {msg}", err=True)
        return 2
    except UserError as e:
        click.echo(f"alviz: error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", err=True)
        return e.exit_code
    except Interrupted as e:
        click.echo(f"alviz: {e}", err=True)
        return e.exit_code
    except KeyboardInterrupt:
        click.echo("alviz: interrupted", err=True)
        return 130
    except OSError as e:  # the file system refused: one line naming the file, whatever the errno
        click.echo(f"alviz: error: {_os_error_line(e)}", err=True)
        return 2
    except MemoryError:
        click.echo("alviz: error: out of memory; use fewer samples (--max-samples), a smaller model or "
                   "batch, or a machine with more memory", err=True)
        return 2
    return 0


_WRITE_ERRNOS = {errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EEXIST, errno.EISDIR, errno.EROFS, errno.ENOSPC,
                 errno.EDQUOT, errno.EFBIG}


def _os_error_line(e: OSError) -> str:
    """`cannot write FILE: why; ...` for a file system that refused a write (a folder under a file,
    permissions, a full disk, a file too large), `cannot use FILE: why` for any other OSError."""
    why = (e.strerror or str(e) or type(e).__name__).splitlines()[0][:200]
    name = f"{e.filename}" + (f" -> {e.filename2}" if getattr(e, "filename2", None) else "") if e.filename else ""
    if e.errno == errno.ENAMETOOLONG:
        why += " (a file name or path is longer than this file system allows: choose a shorter --out)"
    if e.errno in _WRITE_ERRNOS:
        if e.errno in (errno.ENOTDIR, errno.EEXIST):
            why = f"a file, not a folder, is on that path ({why})"
        where = f"cannot write {name}: " if name else ""
        return f"{where}{why}; give paths (--out, --csv) in a folder you can write to, with free space"
    return f"cannot use {name}: {why}" if name else f"{why} (a file system error)"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


def entry() -> None:  # console script
    sys.exit(main())
