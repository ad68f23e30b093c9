"""alviz: train Associated Learning (AL) and matched backprop models and study their hidden layers.

    model, config = alviz.load("checkpoints/mlp-mnist5k-relu/al-seed0")
    scores = model(x)            # class scores, AL and BP alike
"""

__version__ = "0.1.0"


def load(run_dir, device="cpu", epoch=None):
    """Return `(model, config)` of a run directory; the model is in eval mode on `device`. With
    `epoch`, the weights of that epoch (a snapshot kept with `alviz train --snapshots`; 0 is the
    initialisation); a run without it is an error listing the epochs it keeps."""
    from .checkpoint import load_run

    run = load_run(run_dir, device, epoch=epoch)
    return run.model, run.config


def load_run(run_dir, device="cpu", epoch=None):
    """Return a `Run` (model, config, meta, path, epoch) of a run directory (`epoch`: as in `load`)."""
    from .checkpoint import load_run as _load_run

    return _load_run(run_dir, device, epoch=epoch)


def capture(model, layers=None, **kwargs):
    """Forward hooks in a `with` block: `with alviz.capture(model, ["block1"]) as acts: model(x)`
    leaves detached CPU copies of the outputs in `acts` (see alviz.extract.capture)."""
    from .extract import capture as _capture

    return _capture(model, layers, **kwargs)


__all__ = ["load", "load_run", "capture", "__version__"]
