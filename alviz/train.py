"""The generic training loop: data in memory (on the device), one optimiser, per-epoch checkpoints.

It calls `model.losses(x, y) -> (dict of losses with 'loss', class scores)` and back-propagates
`loss`; whether that sum is one end-to-end objective (BP) or a sum of detached local objectives
(AL) is the model's business, not this file's.

The inner step (`train_epoch`) does the model's work and little else: per step it gathers the batch
(`index_select`), augments it on its own device, runs `losses`, backward and the optimiser step, and
records one stacked vector of the loss values and the batch's predicted classes, without reading
them. Every `NAN_CHECK_EVERY` steps the recorded losses are stacked into one block and, with
`on_nan: stop`, one flag is read (the only host synchronisation on a GPU besides the epoch's end);
running sums and accuracy are computed once per epoch, in the same order as a per-step running sum
(so the logged figures are the same to the bit). On CUDA: fused Adam, cuDNN autotuning, optional
channels-last memory format for conv models (`channels_last`), bf16 autocast (`amp`) and
`torch.compile` of the model's `losses` (`compile`). This file does not evaluate hidden layers or
write anything but the run directory.
"""

from __future__ import annotations

import functools
import math
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import __version__
from . import checkpoint as ckpt
from . import concurrent
from . import locks
from . import snapshots as snapshot_spec
from .adam import InPlaceAdam
from .config import HOW_KEYS, TrainConfig, lr_multiplier, schedule_change
from .data import Data, augment_batch, augment_batch_authors, fixed_order, load_dataset
from .epochstats import NAN_CHECK_EVERY, EpochStats, NonFiniteLoss, epoch_stats
from .errors import UserError
from .models import create_model, resolve_shape_defaults
from .recipe import TFAdam, split_l2_groups, step_multiplier


class Diverged(UserError):
    """A loss became NaN or inf and the run was told to stop (`on_nan: stop`)."""

    exit_code = 3


class Interrupted(Exception):
    """Ctrl-C: the last whole checkpoint is kept; `--resume` continues from it."""

    exit_code = 130


def resolve_device(spec: str = "auto") -> torch.device:
    """'auto' -> cuda if present else cpu; 'cpu'; 'cuda' or 'cuda:i' (checked to exist)."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or (spec.startswith("cuda:") and spec[5:].isdigit()):
        if not torch.cuda.is_available():
            raise UserError(f"device {spec!r} was asked for but no CUDA device is available; use --device cpu or auto")
        idx = int(spec[5:]) if ":" in spec else 0
        if idx >= torch.cuda.device_count():
            raise UserError(f"device {spec!r} does not exist; this machine has {torch.cuda.device_count()} "
                            f"CUDA device(s): cuda:0..cuda:{torch.cuda.device_count() - 1}")
        return torch.device(spec)
    raise UserError(f"unknown device {spec!r}; allowed: auto, cpu, cuda, cuda:N")


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7919 + 17) % (2**63 - 1)


def epoch_order(seed: int, epoch: int, n: int, device: torch.device, augment: bool):
    """The epoch's sample order and augmentation generator, a pure function of (seed, epoch), so a
    resumed or distributed run sees exactly the batches of an uninterrupted single-process one."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(_epoch_seed(seed, epoch))).to(device)
    aug_gen = None
    if augment:
        aug_gen = torch.Generator(device=device).manual_seed(_epoch_seed(seed, epoch) + 1)
    return perm, aug_gen


def resolve_data(cfg: TrainConfig, data: Data | None) -> tuple[Data, bool]:
    """The run's data (loaded unless given) and whether to augment it (the data set's default
    unless the config says)."""
    mode = cfg.preprocess or "channel-zscore"
    if data is None or data.preprocess.get("mode", "channel-zscore") != mode:  # given data of another recipe
        data = load_dataset(cfg.dataset, data_dir=cfg.data_dir, test_fraction=cfg.test_fraction, mode=mode)
    augment = data.augment if cfg.augment is None else cfg.augment
    if augment and len(data.input_shape) != 3:
        raise UserError(f"augment needs image data; {cfg.dataset} gives vectors")
    # the authors' augmentation standardises each image after its random ops: keep x_train before it
    late = bool(augment and cfg.augment_ops == "authors" and mode == "mean-image"
                and data.preprocess.get("per_image_standardize"))
    if late == data.train_standardized:
        data = load_dataset(cfg.dataset, data_dir=cfg.data_dir, test_fraction=cfg.test_fraction, mode=mode,
                            standardize_train=not late)
    return data, augment


def run_meta(cfg: TrainConfig, data: Data, augment: bool, device: torch.device) -> dict:
    """The run-describing keys of meta.json, as every training loop (single-process, pipeline, DDP)
    writes them."""
    return {
        "method": cfg.method, "arch": cfg.arch, "dataset": cfg.dataset,
        "input_shape": list(data.input_shape), "num_classes": data.num_classes,
        "class_names": data.class_names, "preprocess": data.preprocess, "augment": augment,
        "alviz_version": __version__, "torch_version": torch.__version__,
        "python": platform.python_version(), "device": str(device),
        "n_train": len(data.y_train), "n_test": len(data.y_test), "torch_threads": torch.get_num_threads(),
        **({"data_sha256": data.sha256} if data.sha256 else {}),
    }


def add_eval_columns(row: dict, ev: dict, eval_seconds: float) -> None:
    """An epoch row's evaluation columns: test accuracy, AL's exit accuracies, evaluation time."""
    row["test_acc"] = ev["acc"]
    for k, a in enumerate(ev.get("exits", []), start=1):
        row[f"test_acc_exit{k}"] = a
    row["eval_seconds"] = eval_seconds


def initial_state(cfg: TrainConfig, input_shape, num_classes: int) -> dict[str, torch.Tensor]:
    """The weights every training loop starts from (`torch.manual_seed(cfg.seed)`, then
    `create_model`), rebuilt on the CPU without touching the caller's random state."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(cfg.seed)
        return create_model(cfg, tuple(input_shape), int(num_classes)).state_dict()


def due_snapshots(cfg: TrainConfig, meta: dict, epoch: int) -> dict:
    """The snapshots to commit with epoch `epoch`'s checkpoint ({epoch: state_dict, or None for the
    model's current weights}): this epoch if `cfg.snapshots` keeps it and, with epoch 1, the
    initialisation (epoch 0), so a crash before the first checkpoint leaves no orphan snapshot."""
    if not cfg.snapshots:
        return {}
    keep = set(snapshot_spec.epochs(cfg.snapshots, cfg.epochs))
    out: dict = {}
    if epoch == 1 and 0 in keep:
        out[0] = initial_state(cfg, meta["input_shape"], meta["num_classes"])
    if epoch in keep:
        out[epoch] = None
    return out


def save_epoch(run: Path, model, opt, cfg: TrainConfig, meta: dict, history: list[dict], bar, log,
               test_acc: float, seconds: float, note: str = "") -> None:
    """Checkpoint the epoch just appended to `history`, with the snapshots `cfg.snapshots` keeps
    (`due_snapshots`), and report it (progress bar or log line). Every training loop (single-process,
    pipeline, DDP) saves through here."""
    epoch = len(history)
    status = "complete" if epoch == cfg.epochs else "running"
    ckpt.save_checkpoint(run, model, opt, cfg, {**meta, "epoch": epoch, "status": status}, history,
                         snapshots=due_snapshots(cfg, meta, epoch))
    if bar is not None:
        bar.set_postfix_str(f"ep {epoch} test {test_acc:.3f}")
    else:
        log(f"{run.name}: epoch {epoch}/{cfg.epochs} test acc {test_acc:.4f} ({seconds:.1f}s{note})")


def set_lrs(opt: torch.optim.Optimizer, base_lrs, mult: float) -> None:
    for g, base in zip(opt.param_groups, base_lrs):
        g["lr"] = base * mult


@torch.no_grad()
def evaluate(model, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 1024,
             device: torch.device | None = None, amp: bool = False) -> dict:
    """Accuracy of `model` on (x, y); for AL models also the accuracy at every early exit."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    has_exits = hasattr(model, "exits")
    correct = None
    for i in range(0, len(y), batch_size):
        xb = x[i:i + batch_size].to(device, non_blocking=True)
        yb = y[i:i + batch_size].to(device, non_blocking=True)
        with _autocast(device, amp):
            outs = model.exits(xb) if has_exits else [model(xb)]
        c = torch.stack([(o.argmax(1) == yb).sum() for o in outs])
        correct = c if correct is None else correct + c
    model.train(was_training)
    acc = (correct.double() / max(len(y), 1)).tolist() if correct is not None else [float("nan")]
    out = {"acc": acc[-1]}
    if has_exits:
        out["exits"] = acc
    return out


def use_channels_last(cfg: TrainConfig, device: torch.device, input_shape) -> bool:
    """channels-last applies to conv models on image data on CUDA; elsewhere the option is a no-op."""
    return bool(cfg.channels_last) and device.type == "cuda" and cfg.arch != "mlp" and len(input_shape) == 3


def cpu_kernels(model, cfg: TrainConfig, device: torch.device):
    """`onednn_linear: true` on the CPU: the model's nn.Linear products through oneDNN (alviz.onednn;
    an opt-in: rounds differently from the default). Elsewhere, or off, the model as it is."""
    if cfg.onednn_linear and device.type == "cpu":
        from alviz.onednn import route_linears

        try:
            route_linears(model)
        except RuntimeError as e:
            raise UserError(str(e)) from None
    return model


def make_optimizer(groups, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """Adam over the model's parameter groups: torch's fused kernel, on CUDA (one launch per step)
    and by default on the CPU (one pass over each tensor, no temporaries: the paper's MNIST MLP's
    AL epoch in 0.67x and 0.93x of the reference arithmetic's time at batch 32 and 256,
    BENCHMARKS.md). `fused_adam: false` (CPU) takes the reference arithmetic instead: the
    multi-tensor ("foreach") operations, the same element-wise operations in the same order as
    torch's single-tensor loop (torch's CPU default), so the same weights to the bit (tested), in
    place into buffers kept between steps (alviz.adam.InPlaceAdam). The two round the update
    differently: the last bit of a few weights a step. `optimizer: sgd`: SGD with momentum (DGL's
    reference); `adam_eps: tf`: TF 1's epsilon placement (recipe.py)."""
    fused = device.type == "cuda" or bool(getattr(cfg, "fused_adam", True))
    kw = {"fused": True} if fused else {"foreach": True}
    if getattr(cfg, "optimizer", "adam") == "sgd":  # SGD with momentum (DGL's reference code)
        kw = {"foreach": True} if device.type != "cuda" else {"fused": True}
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, **kw)
    adam = TFAdam if cfg.adam_eps == "tf" else InPlaceAdam  # torch's Adam; its CPU foreach step in place
    return adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, **kw)


def compile_losses(model):
    """`torch.compile` of the model's `losses` (static shapes: the last, smaller batch of an epoch
    compiles once more). The module itself is not wrapped, so its state_dict keys are unchanged."""
    return torch.compile(model.losses, dynamic=False)


def _autocast(device: torch.device, amp: bool):
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


@dataclass
class Result:
    run_dir: Path
    epoch: int
    test_acc: float
    exits: list[float] | None
    seconds: float
    status: str

    @classmethod
    def from_history(cls, run: Path, history: list[dict], seconds: float) -> "Result":
        """The outcome of a finished run from its per-epoch history (the last row's accuracies)."""
        last = history[-1] if history else {}
        exits = [last[k] for k in sorted(last) if k.startswith("test_acc_exit")] or None
        return cls(run, len(history), last.get("test_acc", float("nan")), exits, seconds, "complete")


def _check_resume_config(stored: TrainConfig, cfg: TrainConfig, run: Path) -> TrainConfig:
    """On --resume, the stored config wins except for keys that do not change the result's meaning."""
    free = HOW_KEYS | {"epochs"}
    a, b = stored.to_dict(), cfg.to_dict()
    diff = sorted(k for k in a if k not in free and a[k] != b[k])
    if diff:
        k = diff[0]
        raise UserError(f"{run}: cannot resume with a different {k} ({a[k]!r} stored, {b[k]!r} asked); "
                        f"start a new run with --out, or drop the changed option")
    return stored.replace(**{k: getattr(cfg, k) for k in free})


def train_epoch(model, opt, x: torch.Tensor, y: torch.Tensor, perm: torch.Tensor, *, batch_size: int,
                losses_fn=None, aug_gen: torch.Generator | None = None, amp: bool = False,
                on_nan: str = "stop", channels_last: bool = False, bar=None,
                nan_check_every: int = NAN_CHECK_EVERY, step_hook=None, augment_fn=None,
                lr_hook=None) -> EpochStats:
    """One pass over `x[perm]`, `y[perm]` (all on the model's device) in batches of `batch_size`.

    `losses_fn(x, y) -> (losses, scores)` defaults to `model.losses` (a compiled version may be given);
    `aug_gen`: augment each batch (`augment_batch`) with this generator; `bar`: a tqdm bar advanced
    once per step; `step_hook(step)`: called after each optimiser step (0-based step of this epoch;
    the test-only fault hook); `augment_fn(x, generator, memory_format=...)`: the augmentation
    (default `augment_batch`); `lr_hook(step)`: called before each optimiser step (a per-step
    learning-rate schedule). Raises `NonFiniteLoss` at the first check after a loss became NaN/inf
    when `on_nan == 'stop'`."""
    losses_fn = losses_fn or model.losses
    device = x.device
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    n = len(perm)
    steps = math.ceil(n / batch_size)
    keys = None
    vecs, blocks, preds, batch_sizes = [], [], [], []
    for step in range(steps):
        idx = perm[step * batch_size:(step + 1) * batch_size]
        # index_select is 4x cheaper than x[idx] on the CPU; x[idx] keeps a channels-last layout
        xb = x[idx] if channels_last else x.index_select(0, idx)
        yb = y.index_select(0, idx)
        if aug_gen is not None:
            xb = (augment_fn or augment_batch)(xb, aug_gen, memory_format=fmt)
        with _autocast(device, amp):
            losses, scores = losses_fn(xb, yb)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        if lr_hook is not None:
            lr_hook(step)
        opt.step()
        if keys is None:
            keys = [k for k in losses if k != "loss"] + ["loss"]
        with torch.no_grad():
            vecs.append(torch.stack([losses[k] for k in keys]))
            preds.append(scores.argmax(1))
        batch_sizes.append(len(idx))
        if (step + 1) % nan_check_every == 0 or step == steps - 1:
            blocks.append(torch.stack(vecs))
            vecs = []
            if on_nan == "stop" and not bool(torch.isfinite(blocks[-1]).all()):
                raise NonFiniteLoss(epoch_stats(keys, blocks, batch_sizes, 0))
        if bar is not None:
            bar.update(1)
        if step_hook is not None:
            step_hook(step)
    correct = int((torch.cat(preds) == y.index_select(0, perm)).sum()) if preds else 0
    return epoch_stats(keys or [], blocks, batch_sizes, correct)


def train(cfg: TrainConfig, run_dir, *, resume: bool = False, data: Data | None = None,
          progress: bool = True, log=print) -> Result:
    """Train one run into `run_dir` (created; must not hold a run unless `resume`), holding the run's
    writer lock (another process training it is a UserError naming that process)."""
    cfg = resolve_shape_defaults(cfg).validate()
    with locks.run_writer(run_dir):
        return _train(cfg, Path(run_dir), resume=resume, data=data, progress=progress, log=log)


def _train(cfg: TrainConfig, run: Path, *, resume: bool, data: Data | None, progress: bool, log) -> Result:
    existing = ckpt.is_run_dir(run)
    if existing and not resume:
        raise UserError(f"{run} already holds a run; continue it with --resume, or choose another --out")
    if resume and existing:
        ckpt.check_run_dir(run)
        cfg = _check_resume_config(resolve_shape_defaults(ckpt.read_config(run)), cfg, run)
    device = resolve_device(cfg.device)
    data, augment = resolve_data(cfg, data)

    restart = None
    if resume and existing:
        restart = schedule_change(resolve_shape_defaults(ckpt.read_config(run)), cfg, ckpt.read_meta(run)["epoch"])
        if restart:  # continuing would not give a fresh run's result: be one (after checking its files)
            probe = create_model(cfg, data.input_shape, data.num_classes)
            ckpt.load_weights(probe, run)
            ckpt.optimizer_from_file(make_optimizer(probe.param_groups(cfg.lr, cfg.lr_gh_factor), cfg,
                                                    torch.device("cpu")), run / "train_state.safetensors")
            log(f"{run}: {restart}; training again from epoch 1 so the run equals a fresh {cfg.epochs}-epoch "
                "run (its checkpoint is replaced at the end of epoch 1)")
    torch.manual_seed(cfg.seed)
    model = cpu_kernels(create_model(cfg, data.input_shape, data.num_classes).to(device), cfg, device)
    channels_last = use_channels_last(cfg, device, data.input_shape)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    groups = split_l2_groups(model.param_groups(cfg.lr, cfg.lr_gh_factor), model, cfg.arch, cfg.l2 or 0.0)
    base_lrs = [g["lr"] for g in groups]
    opt = make_optimizer(groups, cfg, device)

    start_epoch, history = 0, []
    if resume and existing and not restart:
        meta = ckpt.read_meta(run)
        ckpt.load_weights(model, run)
        start_epoch = ckpt.optimizer_from_file(opt, run / "train_state.safetensors")
        if start_epoch != meta["epoch"]:
            raise UserError(f"{run}: train_state is at epoch {start_epoch} but meta.json at {meta['epoch']}")
        history = list(meta.get("history", []))[:start_epoch]
        if start_epoch >= cfg.epochs:
            log(f"{run}: already trained for {start_epoch} epoch(s); nothing to do")
            return Result.from_history(run, history, 0.0)
    workers = None
    if concurrent.eligible(model, cfg, device, torch.get_num_threads()):
        workers = concurrent.ComponentThreads(model, opt, data.input_shape, cfg.batch_size, torch.get_num_threads())
    run.mkdir(parents=True, exist_ok=True)

    meta = run_meta(cfg, data, augment, device)
    if workers is not None:  # which components trained side by side (1-based), one list per thread
        meta["component_threads"] = [[i + 1 for i in part] for part in workers.parts]

    x_tr = data.x_train.to(device)
    if channels_last:
        x_tr = x_tr.contiguous(memory_format=torch.channels_last)
    y_tr = data.y_train.to(device)
    n = len(y_tr)
    bs = cfg.batch_size
    steps = math.ceil(n / bs)
    losses_fn = compile_losses(model) if cfg.compile else model.losses
    order = fixed_order(data.y_train).to(device) if cfg.shuffle is False else None
    augment_fn = None
    if cfg.augment_ops == "authors":
        augment_fn = functools.partial(augment_batch_authors, standardize=not data.train_standardized)
    t_start = time.perf_counter()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=(cfg.epochs - start_epoch) * steps, unit="step", leave=False, dynamic_ncols=True,
                   desc=f"{cfg.method} {cfg.arch}")
    model.train()
    epoch = start_epoch
    faults = bool(os.environ.get(ckpt.FAULT_ENV))  # test-only (see checkpoint.fault)
    try:
        for epoch in range(start_epoch, cfg.epochs):
            mult = lr_multiplier(cfg, epoch)
            set_lrs(opt, base_lrs, mult)
            perm, aug_gen = epoch_order(cfg.seed, epoch, n, device, augment)
            if order is not None:  # shuffle: false, the same order every epoch
                perm = order
            lr_hook = step_lrs = None
            if cfg.schedule == "authors":  # per step over the whole run, as the authors' lr_scheduling
                def step_mult(s, base=epoch * steps, total=steps * cfg.epochs):
                    return step_multiplier(base + s, total)

                def lr_hook(s):  # the sequential loop sets the run optimiser's rates
                    set_lrs(opt, base_lrs, step_mult(s))

                def step_lrs(s):  # the component threads take them as a list, one per group
                    return [b * step_mult(s) for b in base_lrs]
                mult = step_multiplier(epoch * steps + steps - 1, steps * cfg.epochs)  # logged: the last step's
            t0 = time.perf_counter()
            try:
                hook = (lambda s, base=epoch * steps: ckpt.fault("step", base + s + 1)) if faults else None
                if workers is not None:
                    st = workers.train_epoch(x_tr, y_tr, perm, batch_size=bs, aug_gen=aug_gen, on_nan=cfg.on_nan,
                                             bar=bar, step_hook=hook, augment_fn=augment_fn, step_lrs=step_lrs)
                else:
                    st = train_epoch(model, opt, x_tr, y_tr, perm, batch_size=bs, losses_fn=losses_fn,
                                     aug_gen=aug_gen, amp=cfg.amp, on_nan=cfg.on_nan,
                                     channels_last=channels_last, bar=bar, step_hook=hook,
                                     augment_fn=augment_fn, lr_hook=lr_hook)
            except NonFiniteLoss as e:
                _diverged(e.stats.keys, e.stats.first_bad, epoch, run)
            train_seconds = time.perf_counter() - t0
            ev = evaluate(model, data.x_test, data.y_test, device=device, amp=cfg.amp)
            row = {"epoch": epoch + 1, "seconds": train_seconds, "lr": cfg.lr * mult}
            for k, v in zip(st.keys, st.sums):
                row["train_loss" if k == "loss" else f"loss_{k}"] = v / n
            row["train_acc"] = st.correct / n
            add_eval_columns(row, ev, time.perf_counter() - t0 - train_seconds)
            if st.first_bad:
                row["nonfinite_losses"] = ",".join(k for k in st.keys if k in st.first_bad)
                log(f"warning: {_nonfinite_what(st.keys, st.first_bad, epoch)}; continuing (--on-nan continue)")
            history.append(row)
            save_epoch(run, model, opt, cfg, meta, history, bar, log, ev["acc"], train_seconds)
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        raise Interrupted(f"interrupted during epoch {epoch + 1}; {_kept(run)}; continue with the same "
                          f"alviz train command plus --resume (experiment {run.parent})") from None
    finally:
        if bar is not None:
            bar.close()
    return Result.from_history(run, history, time.perf_counter() - t_start)


def _nonfinite_what(keys, first_bad: dict, epoch) -> str:
    first = min((b, k) for k, b in first_bad.items())
    comps = [k for k in keys if first_bad.get(k) == first[0] and k != "loss"]
    return f"loss {', '.join(comps) or 'loss'} became NaN/inf at epoch {epoch + 1}, step {first[0] + 1}"


def _kept(run: Path) -> str:
    """What an interrupted run keeps on disk (an interrupted save is finished or dropped first)."""
    try:
        ckpt.recover(run)
        epoch = ckpt.read_meta(run)["epoch"] if (run / "meta.json").is_file() else None
    except (UserError, OSError):
        epoch = None
    return (f"the checkpoint of epoch {epoch} in {run} is kept" if epoch is not None
            else f"no epoch was finished, so {run} holds no checkpoint yet")


def _diverged(keys, first_bad: dict, epoch, run):
    raise Diverged(f"{_nonfinite_what(keys, first_bad, epoch)}; {_kept(run)} "
                   "(lower --lr, or --on-nan continue)")


def set_threads(n: int | None) -> None:
    if n is None:
        return
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise UserError(f"--threads must be a positive integer; received {n!r}")
    torch.set_num_threads(n)


__all__ = ["train", "train_epoch", "EpochStats", "NonFiniteLoss", "evaluate", "resolve_device", "lr_multiplier",
           "make_optimizer", "cpu_kernels", "compile_losses", "use_channels_last", "Diverged", "Interrupted", "Result",
           "set_threads", "NAN_CHECK_EVERY", "np"]
