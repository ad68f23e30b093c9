"""The `alviz` command line: parse, build a config, call one function, print the outcome.

Every user mistake ends as a one-line `alviz: error: ...` on stderr and exit status 2 (click's
usage errors included); a diverged run exits 3, Ctrl-C 130.
"""

from __future__ import annotations

import json
import sys

import click

from .errors import UserError


def _seeds(value: str | None):
    if value is None:
        return None
    try:
        seeds = [int(s) for s in value.split(",") if s.strip() != ""]
    except ValueError:
        raise UserError(f"--seeds must be comma-separated non-negative integers like 0,1,2; received {value!r}") from None
    if not seeds or any(s < 0 for s in seeds):
        raise UserError(f"--seeds must be comma-separated non-negative integers like 0,1,2; received {value!r}")
    return seeds


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="alviz")
def cli():
    """alviz: train Associated Learning and backprop models, then study their hidden layers.

    Start with `alviz train` then `alviz analyze` (the embedded MNIST subset, offline).
    """


@cli.command()
@click.option("--method", type=click.Choice(["al", "bp", "both"]), default="both", show_default=True)
@click.option("--arch", default=None, help="mlp, cnn, vgg, resnet20, resnet32 [mlp]")
@click.option("--dataset", default=None, help="mnist5k, digits, blobs, mnist, fashion-mnist, cifar10, cifar100, npz:PATH [mnist5k]")
@click.option("--activation", default=None, help="relu, elu, sigmoid, tanh [relu]")
@click.option("--depth", type=int, default=None, help="number of components [arch default]")
@click.option("--width", type=int, default=None, help="width n of the label path [arch default]")
@click.option("--epochs", type=int, default=None)
@click.option("--batch-size", type=int, default=None)
@click.option("--lr", type=float, default=None)
@click.option("--seed", type=int, default=None)
@click.option("--seeds", default=None, help="several seeds, e.g. 0,1,2 (one run per method and seed)")
@click.option("--device", default=None, help="auto, cpu, cuda, cuda:N [auto]")
@click.option("--amp", is_flag=True, default=None, help="bf16 autocast on CUDA")
@click.option("--variant", default=None, help="AL variant: paper or iclr2022")
@click.option("--data-dir", default=None, help="where torchvision data sets live [data]")
@click.option("--on-nan", default=None, help="stop or continue when a loss becomes NaN/inf [stop]")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None, help="YAML config; flags override it")
@click.option("--preset", default=None, help="a named preset (see `alviz presets`)")
@click.option("--out", default=None, help="experiment folder [checkpoints/<arch>-<dataset>-<activation>]")
@click.option("--resume", is_flag=True, help="continue unfinished runs from their last checkpoint")
@click.option("--force", is_flag=True, help="replace existing runs in the experiment folder")
@click.option("--threads", type=int, default=None, help="CPU threads for torch")
@click.option("--quiet", is_flag=True, help="no progress bar")
def train(method, config_file, preset, out, resume, force, seeds, threads, quiet, **flags):
    """Train AL and/or matched BP models (default: both, MLP on mnist5k)."""
    from . import config as cfgmod
    from .experiment import train_experiment
    from .train import set_threads

    base = cfgmod.TrainConfig()
    if preset:
        from .presets import load_preset

        base = load_preset(preset)
    if config_file:
        base = cfgmod.load_config(config_file, base)
    overrides = {k: v for k, v in flags.items() if v is not None}
    cfg = cfgmod.from_dict(overrides, base, source="command line")
    seed_list = _seeds(seeds) or [cfg.seed]
    methods = ("al", "bp") if method == "both" else (method,)
    set_threads(threads)
    exp, results = train_experiment(cfg, methods, seed_list, out, resume=resume, force=force,
                                    progress=not quiet, log=click.echo)
    for p, r in results:
        if r is None:
            continue
        exits = ""
        if r.exits and len(r.exits) > 1:
            exits = "  exits " + " ".join(f"{a:.4f}" for a in r.exits)
        click.echo(f"{p.cfg.method:>3} seed {p.cfg.seed}: test acc {r.test_acc:.4f}{exits}  "
                   f"({r.seconds:.1f}s)  -> {r.run_dir}")
    click.echo(f"experiment: {exp}   next: alviz analyze {exp}")


@cli.command()
@click.argument("run_dir", type=click.Path())
@click.option("--dataset", default=None, help="data set to evaluate on [the run's own]")
@click.option("--split", default="test", show_default=True, help="train, test or all")
@click.option("--data-dir", default=None)
@click.option("--batch-size", type=int, default=1024, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def evaluate(run_dir, dataset, split, data_dir, batch_size, device, as_json):
    """Accuracy of a trained run (and AL's accuracy at every exit)."""
    from .checkpoint import load_run
    from .data import load_dataset
    from .train import evaluate as _evaluate
    from .train import resolve_device

    dev = resolve_device(device)
    run = load_run(run_dir, dev)
    name = dataset or run.config.dataset
    data = load_dataset(name, data_dir=data_dir or run.config.data_dir,
                        test_fraction=run.config.test_fraction, preprocess=run.meta["preprocess"])
    if data.num_classes > int(run.meta["num_classes"]):
        raise UserError(f"{name} has labels up to {data.num_classes - 1} but the model knows "
                        f"{run.meta['num_classes']} classes (0..{int(run.meta['num_classes']) - 1})")
    x, y, _ = data.split(split)
    if batch_size < 1:
        raise UserError(f"--batch-size must be a positive integer; received {batch_size}")
    ev = _evaluate(run.model, x, y, batch_size=batch_size, device=dev)
    out = {"run": str(run.path), "method": run.config.method, "dataset": name, "split": split,
           "n": len(y), "accuracy": ev["acc"]}
    if "exits" in ev:
        out["exit_accuracy"] = ev["exits"]
    if as_json:
        click.echo(json.dumps(out))
        return
    click.echo(f"{run.path} ({run.config.method}) on {name}/{split}, {len(y)} samples: accuracy {ev['acc']:.4f}")
    for k, a in enumerate(ev.get("exits", []), start=1):
        click.echo(f"  exit {k}: {a:.4f}")


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
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


def entry() -> None:  # console script
    sys.exit(main())
