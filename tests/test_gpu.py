"""alviz on a CUDA GPU: training (fp32, bf16 autocast, channels-last, fused Adam) and extraction give
what the CPU gives, within the GPU's rounding. Skipped where torch sees no GPU (this project's CI);
run by bench/gpu_check.sh on a lent GPU machine."""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def _quiet(*_a, **_k):
    pass


@pytest.mark.parametrize("method", ["al", "bp"])
def test_training_on_cuda_learns_and_its_checkpoint_loads_on_the_cpu(tmp_path, blobs_cfg, method):
    import alviz
    from alviz.train import train

    res = train(blobs_cfg.replace(method=method, device="cuda", epochs=5), tmp_path / method, progress=False,
                log=_quiet)
    assert res.status == "complete" and res.test_acc > 0.6  # 5 blobs: chance is 0.2
    model = alviz.load(tmp_path / method, device="cpu")
    assert all(p.device.type == "cpu" for p in model.parameters())
    from alviz.train import make_optimizer

    opt = make_optimizer(model.param_groups(blobs_cfg.lr, blobs_cfg.lr_gh_factor), blobs_cfg, torch.device("cuda"))
    assert opt.defaults["fused"] is True


@pytest.mark.parametrize("flags", [{"amp": True}, {"amp": True, "channels_last": True}], ids=["amp", "amp_cl"])
def test_cnn_with_bf16_autocast_and_channels_last_trains(tmp_path, flags):
    from alviz.config import TrainConfig
    from alviz.train import train

    cfg = TrainConfig(method="al", arch="cnn", dataset="digits", epochs=3, batch_size=64, lr=1e-3, schedule="none",
                      device="cuda", **flags)
    res = train(cfg, tmp_path / "r", progress=False, log=_quiet)
    assert res.status == "complete" and np.isfinite(res.test_acc) and res.test_acc > 0.3  # 10 classes


def test_extraction_on_cuda_equals_the_cpus(tmp_path, blobs_cfg):
    from alviz.extract import extract_run, load_activations
    from alviz.train import train

    run = tmp_path / "run"
    train(blobs_cfg.replace(method="al"), run, progress=False, log=_quiet)
    cpu = load_activations(extract_run(run, max_samples=100, device="cpu", log=_quiet))
    layers = {k: np.array(v) for k, v in cpu.layers.items()}  # copies: the next extraction replaces the files
    labels = np.array(cpu.labels)
    del cpu
    gpu = load_activations(extract_run(run, max_samples=100, device="cuda", force=True, log=_quiet))
    assert list(gpu.layers) == list(layers) and len(layers) >= 4
    for k, want in layers.items():
        np.testing.assert_allclose(gpu.layers[k], want, rtol=1e-3, atol=1e-4, err_msg=k)
    np.testing.assert_array_equal(gpu.labels, labels)
