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
