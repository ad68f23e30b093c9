import os

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """Every test starts with the session's torch thread count, whatever an earlier one set (an
    in-process `alviz train --threads 1` sets it for the whole process)."""
    n = torch.get_num_threads()
    yield
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


@pytest.fixture
def threads():
    """`threads(n)`: torch's thread count for the rest of the test (restored afterwards)."""
    return torch.set_num_threads


def poison_al_loss(monkeypatch, component: int, loss: str, when) -> None:
    """Make AL's loss `loss` ("assoc" or "ae") of component `component` (0-based) NaN in the training
    forward passes k (1-based, counted per component) for which `when(k)` holds. It patches the one
    place both training loops (alviz.train's and alviz.concurrent's threads) compute a component, so
    the step it hits is the same in both (the cost probe, in eval mode, is not counted)."""
    from alviz.models.associated import ALModel

    real = ALModel._component
    calls = [0]

    def poisoned(self, i, s_prev, t_prev, y):
        s, t, b, assoc, ae = real(self, i, s_prev, t_prev, y)
        if i == component and self.training and torch.is_grad_enabled():
            calls[0] += 1
            if when(calls[0]):
                if loss == "assoc":
                    assoc = assoc * float("nan")
                else:
                    ae = ae + (ae * float("nan")).detach()  # a NaN value; its gradient stays finite
        return s, t, b, assoc, ae

    monkeypatch.setattr(ALModel, "_component", poisoned)


@pytest.fixture
def blobs_cfg():
    from alviz.config import TrainConfig

    return TrainConfig(dataset="blobs", epochs=3, width=16, batch_size=32, lr=1e-2, schedule="none", device="cpu")


def _cli_main(args) -> int:
    """alviz.cli.main in this process; `--threads` sets torch's thread count for the whole process,
    so it is restored afterwards."""
    from alviz.cli import main

    n = torch.get_num_threads()
    try:
        return main(args)
    finally:
        torch.set_num_threads(n)


@pytest.fixture(scope="session")
def cli_main():
    """`cli_main(args) -> exit status`: the CLI in this process, torch's thread count left as it was."""
    return _cli_main


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium driven by Playwright (tests/browser_util.py says which executable and
    how it is started), one per test module. Modules using it skip themselves without a browser."""
    from browser_util import browser_executable, launch
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = launch(p, browser_executable())
        yield b
        b.close()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """Where browser tests leave screenshots and PDFs for a reader ($ALVIZ_ARTIFACTS, else a temp folder)."""
    from browser_util import artifacts_folder

    return artifacts_folder(tmp_path_factory)


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    """A tiny separable 3-class data set (250 x 8) as an `npz:` file, for CLI training runs."""
    import numpy as np

    rng = np.random.default_rng(0)
    y = np.arange(250) % 3
    x = (rng.normal(0, 3, (3, 8))[y] + rng.normal(0, 1, (250, 8))).astype(np.float32)
    p = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(p, x=x, y=y)
    return p
