"""A local rule's components trained side by side in threads of one process (CPU; `concurrent: true`).

AL, SCPL and DGL stop every gradient at a component boundary, so component i's forward pass, backward
pass and optimiser step for a batch need only what component i-1 hands on for that batch (its carry:
AL's s and t, SCPL's and DGL's s). This file gives each of W worker threads a contiguous group of
components (cut by estimated cost, alviz.parallel.cost) and its own optimiser over their parameters,
and streams the batches through them: worker 0 gathers (and augments) the batch, every worker runs
its components (`model.stage_losses`), hands the carry to the next worker through a bounded queue,
then takes its own backward pass and step while the next worker already works on that batch. An
upstream worker may run up to `AHEAD` batches ahead. Worker w's threads for its matrix products:
the run's torch threads / W (1 on a 2-core machine).

Why this is the sequential step's arithmetic: component i's weights at batch k depend only on its
own gradients of batches 1..k, whose inputs are component i-1's carries computed with component
i-1's weights at batch k, before its update, exactly as in the sequential step (forward everything,
then step everything). Each worker's optimiser shares the run's optimiser state (`state` is one
dict keyed by parameter) and takes its hyper-parameters from the run optimiser's groups, and Adam
and SGD update every tensor on its own, so the weights equal a sequential run's *with the same
threads per matrix product*: with 1 thread a worker (2 cores, 2 components), a 1-thread run's to
the bit (tested; torch's products round differently with 2 threads than with 1, in the last bit).
The running training accuracy reads the class scores of the sequential step too: AL's scores run
through every component's decoder h_i, so each worker sends along copies of its decoders as they
stood at the batch's forward pass (`model.score_snapshot`), and the last worker decodes with them
(`model.last_stage`). Losses are recorded per worker and put together in the sequential order.

A worker that sees a NaN/inf loss at a check (with `on_nan: stop`) stops the others at that check's
step, so the error names the same first step as the sequential loop; an exception in a worker
stops the others and is raised in the calling thread, as is Ctrl-C.

What this is not: processes (alviz.parallel's --pipeline), micro-batches, GPUs (CUDA runs the
sequential loop: one stream is already kept busy there), or end-to-end rules (BP, al-e2e).
"""
from __future__ import annotations

import math
import queue
import threading

import torch

from .data import augment_batch
from .epochstats import NAN_CHECK_EVERY, EpochStats, NonFiniteLoss, epoch_stats
from .models import component_params

AHEAD = 2  # batches an upstream worker may run ahead of the next one (bounded memory: AHEAD carries)
POLL_S = 0.1  # how often a blocked worker, and the calling thread, look whether the epoch was stopped


def eligible(model, cfg, device: torch.device, threads: int) -> bool:
    """Whether `train` runs `model` with component threads: `concurrent` on, the CPU, a local rule
    (its losses reach only their own component) of 2+ components, 2+ torch threads, not compiled."""
    return (bool(getattr(cfg, "concurrent", False)) and device.type == "cpu" and getattr(model, "local", False)
            and getattr(model, "depth", 1) >= 2 and threads >= 2 and not getattr(cfg, "compile", False)
            and hasattr(model, "last_stage"))


def split(model, input_shape, batch_size: int, workers: int) -> list[range]:
    """Contiguous groups of components, one per worker, by estimated cost (alviz.parallel.cost)."""
    from .parallel.cost import component_costs, partition_by_cost

    workers = max(1, min(int(workers), model.depth))
    return partition_by_cost(component_costs(model, input_shape, batch_size), workers)


def _hypers(group: dict) -> dict:
    """A parameter group's hyper-parameters (everything but its parameters)."""
    return {k: v for k, v in group.items() if k != "params"}


def sub_optimizer(opt: torch.optim.Optimizer, params) -> tuple[torch.optim.Optimizer, list[int]]:
    """An optimiser of `opt`'s class over `params` (a subset of its parameters) that shares `opt`'s
    state, one group per group of `opt` holding any of them, with that group's hyper-parameters;
    and, for each of its groups, the index of the group of `opt` it stands for."""
    ids = {id(p) for p in params}
    groups, parents = [], []
    for gi, g in enumerate(opt.param_groups):
        ps = [p for p in g["params"] if id(p) in ids]
        if ps:
            groups.append({**_hypers(g), "params": ps})
            parents.append(gi)
    sub = type(opt)(groups, **opt.defaults)  # (TFAdam's epsilon comes from defaults["eps"], as in `opt`)
    sub.state = opt.state  # one state: checkpoints read it through `opt`
    return sub, parents


class _Stop(Exception):
    """The epoch was stopped (another worker failed, or Ctrl-C): leave quietly."""


class ComponentThreads:
    """The workers of one training run: groups of components, their optimisers, threads each.

    `opt` is the run's optimiser (over all parameters; it is what checkpoints save); `threads`: torch
    threads for the whole run. Build once per run, call `train_epoch` for every epoch."""

    def __init__(self, model, opt: torch.optim.Optimizer, input_shape, batch_size: int, threads: int):
        self.model, self.opt = model, opt
        self.parts = split(model, input_shape, batch_size, threads)
        self.intra = max(1, threads // len(self.parts))
        self.opts = [sub_optimizer(opt, component_params(model, comps)) for comps in self.parts]
        self.keys = [k for i in range(model.depth) for k in model.component_loss_keys(i)] + ["loss"]

    def train_epoch(self, x: torch.Tensor, y: torch.Tensor, perm: torch.Tensor, *, batch_size: int,
                    aug_gen: torch.Generator | None = None, on_nan: str = "stop", bar=None,
                    nan_check_every: int = NAN_CHECK_EVERY, step_hook=None, augment_fn=None,
                    step_lrs=None) -> EpochStats:
        """One pass over `x[perm]`, `y[perm]` in batches of `batch_size`, as `alviz.train.train_epoch`
        (the same arguments; `step_lrs(step) -> [lr of each group of the run's optimiser]` replaces
        its `lr_hook`: a per-step schedule; None: the groups' current rates). Returns the same
        EpochStats and raises NonFiniteLoss at the same step as the sequential loop would."""
        W, n = len(self.parts), len(perm)
        steps = math.ceil(n / batch_size)
        chans = [queue.Queue(maxsize=AHEAD) for _ in range(W)]
        state = {"stop_at": steps - 1, "abort": False}
        lock = threading.Lock()
        rows: list[list[torch.Tensor]] = [[] for _ in range(W)]
        preds: list[torch.Tensor] = []
        errors: list[BaseException] = []
        for sub, parents in self.opts:  # this epoch's rates (and a state replaced by a resume's load)
            sub.state = self.opt.state
            for g, gi in zip(sub.param_groups, parents):
                g.update(_hypers(self.opt.param_groups[gi]))

        def halted(step: int) -> bool:
            return state["abort"] or step > state["stop_at"]

        def put(w: int, step: int, item) -> None:
            while True:
                try:
                    chans[w].put(item, timeout=POLL_S)
                    return
                except queue.Full:
                    if halted(step):
                        raise _Stop from None

        def get(w: int, step: int):
            while True:
                try:
                    return chans[w].get(timeout=POLL_S)
                except queue.Empty:  # a group that stopped at an earlier check sends no more
                    if halted(step):
                        raise _Stop from None

        def work(w: int) -> None:
            model, (sub, parents), comps = self.model, self.opts[w], self.parts[w]
            last = w == W - 1
            torch.set_num_threads(self.intra)
            block = []
            for step in range(steps):
                if halted(step):
                    return
                if w == 0:
                    idx = perm[step * batch_size:(step + 1) * batch_size]
                    xb, yb = x.index_select(0, idx), y.index_select(0, idx)
                    if aug_gen is not None:
                        xb = (augment_fn or augment_batch)(xb, aug_gen, memory_format=torch.contiguous_format)
                    carry, snaps = model.initial_carry(xb, yb), []
                else:
                    carry, yb, snaps = get(w, step)
                losses = []
                for i in comps:
                    if i == model.depth - 1:
                        carry, ls, scores = model.last_stage(carry, yb, snaps)
                    else:
                        carry, ls = model.stage_losses(i, carry, yb)
                        snaps = snaps + [model.score_snapshot(i)]
                    losses += ls
                if not last:
                    put(w + 1, step, (tuple(c.detach() for c in carry), yb, snaps))
                sub.zero_grad(set_to_none=True)
                sum(losses[1:], losses[0]).backward()
                if step_lrs is not None:
                    lrs = step_lrs(step)
                    for g, gi in zip(sub.param_groups, parents):
                        g["lr"] = lrs[gi]
                sub.step()
                with torch.no_grad():
                    block.append(torch.stack([v.detach() for v in losses]))
                    if last:
                        preds.append(scores.argmax(1))
                if (step + 1) % nan_check_every == 0 or step == steps - 1:
                    rows[w].append(torch.stack(block))
                    block = []
                    if on_nan == "stop" and not bool(torch.isfinite(rows[w][-1]).all()):
                        with lock:
                            state["stop_at"] = min(state["stop_at"], step)
                        return
                if last:
                    if bar is not None:
                        bar.update(1)
                    if step_hook is not None:
                        step_hook(step)

        def run(w: int) -> None:
            try:
                work(w)
            except _Stop:
                pass
            except BaseException as e:  # noqa: BLE001 - handed to the calling thread
                with lock:
                    errors.append(e)
                    state["abort"] = True

        threads = [threading.Thread(target=run, args=(w,), name=f"alviz-component-{w}", daemon=True)
                   for w in range(W)]
        outer = torch.get_num_threads()
        try:
            for t in threads:
                t.start()
            for t in threads:
                while t.is_alive():
                    t.join(POLL_S)
        except BaseException:  # Ctrl-C (KeyboardInterrupt) or anything else in this thread: stop the workers
            state["abort"] = True
            for t in threads:
                t.join()
            raise
        finally:
            torch.set_num_threads(outer)
            for sub, parents in self.opts:  # what the workers' steps set (rates, TF-Adam's epsilon) back
                for g, gi in zip(sub.param_groups, parents):
                    self.opt.param_groups[gi].update(_hypers(g))
        if errors:
            raise errors[0]
        done = state["stop_at"] + 1
        table = torch.cat([torch.cat(r)[:done] for r in rows], dim=1) if done else torch.zeros(0, len(self.keys) - 1)
        total = table[:, 0].clone()
        for j in range(1, table.shape[1]):  # `loss`: the sequential loop's float32 sum, left to right
            total = total + table[:, j]
        table = torch.cat([table, total[:, None]], dim=1)
        sizes = [len(perm[s * batch_size:(s + 1) * batch_size]) for s in range(done)]
        if done < steps or not bool(torch.isfinite(table).all()) and on_nan == "stop":
            raise NonFiniteLoss(epoch_stats(self.keys, [table], sizes, 0))
        correct = int((torch.cat(preds) == y.index_select(0, perm)).sum()) if preds else 0
        return epoch_stats(self.keys, [table], sizes, correct)


__all__ = ["ComponentThreads", "eligible", "split", "sub_optimizer", "AHEAD"]
