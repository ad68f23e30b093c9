import os

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def blobs_cfg():
    from alviz.config import TrainConfig

    return TrainConfig(dataset="blobs", epochs=3, width=16, batch_size=32, lr=1e-2, schedule="none", device="cpu")
