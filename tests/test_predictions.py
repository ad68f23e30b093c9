"""Each activation set stores the run's own prediction and confidence per sample (pred.npy,
conf.npy), from the same forward pass as the activations; old sets without them still load."""
import json

import numpy as np
import pytest
import torch

from alviz import extract as X
from alviz.checkpoint import load_run
from alviz.config import TrainConfig
from alviz.data import load_dataset
from alviz.errors import UserError


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from alviz.train import train

    root = tmp_path_factory.mktemp("pred")
    train(TrainConfig(method="al", dataset="blobs", epochs=1, depth=2, width=8, batch_size=64, schedule="none",
                      device="cpu"), root / "al", progress=False, log=lambda *a: None)
    return root / "al"


def test_pred_and_conf_match_the_models_own_output(run):
    folder = X.extract_run(run, split="test", max_samples=60, log=lambda *a: None)
    acts = X.load_activations(folder)
    m = json.loads((folder / "manifest.json").read_text())
    assert m["pred_file"] == "pred.npy" and m["conf_file"] == "conf.npy"
    assert acts.pred.dtype == np.int64 and acts.conf.dtype == np.float32 and acts.pred.shape == acts.ids.shape
    r = load_run(run, "cpu")
    data = load_dataset(r.config.dataset, test_fraction=r.config.test_fraction, preprocess=r.meta["preprocess"])
    x, _, ids = data.split("test")
    pos = {int(i): k for k, i in enumerate(np.asarray(ids))}
    xs = x[[pos[int(i)] for i in acts.ids]]
    with torch.no_grad():
        p = torch.softmax(r.model.eval()(xs), 1)
    np.testing.assert_array_equal(acts.pred, p.argmax(1).numpy())
    np.testing.assert_allclose(acts.conf, p.max(1).values.numpy(), rtol=1e-5)
    # the model's accuracy from the stored predictions is the one the run reports for these samples
    assert 0 <= (acts.pred == acts.labels).mean() <= 1


def test_an_old_set_without_predictions_loads_and_is_redone_only_when_asked(run):
    folder = X.extract_run(run, split="test", max_samples=40, log=lambda *a: None)
    m = json.loads((folder / "manifest.json").read_text())
    del m["pred_file"], m["conf_file"]
    (folder / "manifest.json").write_text(json.dumps(m))
    (folder / "pred.npy").unlink()
    assert X.load_activations(folder).pred is None and X.load_activations(folder).conf is None
    log = []
    X.extract_run(run, split="test", max_samples=40, log=log.append)
    assert any("reusing" in s for s in log) and X.load_activations(folder).pred is None
    log.clear()
    X.extract_run(run, split="test", max_samples=40, log=log.append, predictions=True)
    assert any("prediction" in s for s in log) and X.load_activations(folder).pred is not None


def test_bad_prediction_files_are_one_line_errors(run):
    folder = X.extract_run(run, split="test", max_samples=40, log=lambda *a: None)
    np.save(folder / "pred.npy", np.zeros(40, np.int32))
    with pytest.raises(UserError, match="pred must be 40 int64"):
        X.load_activations(folder)
    np.save(folder / "pred.npy", np.full(40, 99, np.int64))
    with pytest.raises(UserError, match="pred holds class 99"):
        X.load_activations(folder)
    np.save(folder / "pred.npy", np.zeros(40, np.int64))
    np.save(folder / "conf.npy", np.full(40, 1.5, np.float32))
    with pytest.raises(UserError, match=r"probabilities in \[0, 1\]"):
        X.load_activations(folder)
    m = json.loads((folder / "manifest.json").read_text())
    m["pred_file"] = "../pred.npy"
    (folder / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(UserError, match="not inside the activation folder"):
        X.load_activations(folder)


def test_threaded_writer_stores_the_same_predictions(tmp_path):
    from alviz.extract.writer import Predictions, extract_arrays
    from alviz.models import create_model

    torch.manual_seed(0)
    model = create_model(TrainConfig(method="bp", arch="mlp", depth=2, width=4), (5,), 3).eval()
    x = torch.randn(50, 5)
    idx = np.arange(0, 50, 2)
    out = []
    for threaded in (False, True):
        p = Predictions(len(idx))
        d = tmp_path / str(threaded)
        d.mkdir()
        extract_arrays(model, x, idx, ["block1"], d, batch_size=8, writer_thread=threaded, predictions=p)
        out.append(p)
    with torch.no_grad():
        s = torch.softmax(model(x[idx]), 1)
    for p in out:
        np.testing.assert_array_equal(p.pred, s.argmax(1).numpy())
        np.testing.assert_allclose(p.conf, s.max(1).values.numpy(), rtol=1e-5)
