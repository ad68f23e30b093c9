"""Published accuracies, with their provenance, for the presets whose settings follow a paper's or a
repository's recipe: `alviz presets` shows them beside the preset, `alviz presets --published` lists
them all.

Only numbers read in their source are here, each with where it was read (repository, file, table,
row, column). Sources looked at and left out, and why:

- github blackfeather-wang/InfoPro-Pytorch: its CIFAR tables (greedy supervised learning and DGL on
  ResNet-32/110 at K = 2..16 local modules) are images in the README (figs/cifar.png,
  figs/cifar_k.png), which could not be read as text here, so none of their numbers is included.
- github minyaho/SCPL and github eugenium/DGL: their READMEs publish no accuracy table.

This module holds data only: it trains nothing and reads no file.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

LOCAL_LOSS = "github anokland/local-loss README.md (Nokland & Eidnes 2019, arXiv:1901.06656)"


@dataclass(frozen=True)
class Published:
    source: str  # repository or paper
    where: str  # table and row/column, as in the source
    dataset: str
    model: str  # as named in the source
    rule: str  # as named in the source
    alviz_method: str  # the alviz method closest to `rule`
    test_error: float  # percent, as published
    epochs: int | None
    settings: str  # the recipe behind the number, as the source gives it
    presets: tuple[str, ...]  # alviz presets trained with (close to) those settings

    @property
    def test_acc(self) -> float:
        return round(1.0 - self.test_error / 100.0, 6)

    def to_dict(self) -> dict:
        return {**asdict(self), "presets": list(self.presets), "test_acc": self.test_acc}


_MNIST = ("'Results on MNIST with 2 pixel jittering', row mlp (2.9M parameters)", "mnist", "mlp (3 x 1024, leaky ReLU, "
          "BatchNorm, dropout 0.1)", 100, "README recipe 'MLP on MNIST': Adam 5e-4, batch 128 (train.py default), "
          "100 epochs, lr x0.25 at epochs 50/75/89/94", ("mnist-local-pred-mlp",))
_CIFAR10 = ("'Results on Cifar-10 with data augmentation', row mlp (27.3M parameters)", "cifar10", "mlp (3 x 3000, "
            "leaky ReLU, BatchNorm, dropout 0.1)", 400, "README recipe 'MLP on CIFAR10': Adam 5e-4, batch 128, 400 "
            "epochs, lr x0.25 at epochs 200/300/350/375 (train.py defaults)", ("cifar10-local-pred-mlp",))

PUBLISHED: tuple[Published, ...] = (
    Published(LOCAL_LOSS, _MNIST[0] + ", column 'Global loss'", _MNIST[1], _MNIST[2], "global loss (backprop)", "bp",
              0.75, _MNIST[3], _MNIST[4], _MNIST[5]),
    Published(LOCAL_LOSS, _MNIST[0] + ", column \"Local loss 'pred'\"", _MNIST[1], _MNIST[2],
              "layer-wise cross-entropy, detached after each hidden layer ('pred')", "dgl", 0.68, _MNIST[3],
              _MNIST[4], _MNIST[5]),
    Published(LOCAL_LOSS, _CIFAR10[0] + ", column 'Global loss'", _CIFAR10[1], _CIFAR10[2], "global loss (backprop)",
              "bp", 33.56, _CIFAR10[3], _CIFAR10[4], _CIFAR10[5]),
    Published(LOCAL_LOSS, _CIFAR10[0] + ", column \"Local loss 'pred'\"", _CIFAR10[1], _CIFAR10[2],
              "layer-wise cross-entropy, detached after each hidden layer ('pred')", "dgl", 32.33, _CIFAR10[3],
              _CIFAR10[4], _CIFAR10[5]),
    Published(LOCAL_LOSS, "'Results on Cifar-10 with data augmentation', row vgg8b (8.9M parameters), column "
              "\"Local loss 'pred'\"", "cifar10", "vgg8b", "layer-wise cross-entropy ('pred')", "dgl", 8.40, 400,
              "README recipe 'VGG8b on CIFAR10' (dropout 0.2, Adam 5e-4, 400 epochs); no alviz preset: alviz has "
              "no VGG-8b", ()),
    Published(LOCAL_LOSS, "'Results on Cifar-100 with data augmentation', row mlp (27.3M parameters), column "
              "\"Local loss 'pred'\"", "cifar100", "mlp (3 x 3000)", "layer-wise cross-entropy ('pred')", "dgl",
              58.87, 400, "as the CIFAR-10 MLP recipe, on CIFAR-100; no alviz preset", ()),
)


def for_preset(name: str) -> list[Published]:
    """The published entries whose settings the preset `name` follows."""
    return [p for p in PUBLISHED if name in p.presets]


def describe(p: Published) -> str:
    """One line: the rule, the number and where it was read."""
    return (f"{p.dataset} {p.model}, {p.rule} [alviz {p.alviz_method}]: test error {p.test_error:g} % "
            f"(accuracy {p.test_acc:.4f}), {p.epochs} epochs; {p.source}, {p.where}")


__all__ = ["Published", "PUBLISHED", "for_preset", "describe"]
