import os

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
torch.set_num_threads(min(2, torch.get_num_threads()))


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
