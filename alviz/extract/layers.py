"""The layer map of an alviz model: every extractable layer's name, role, position along the
inference path and the ``match`` key that lines up the layers of AL, BP and the other rules.

Layer catalogue (L components; positions count along the inference path; ``match = "p<position>"``)::

    AL  block{k}    encoder  s_k = f_k(s_{k-1})                 position k
        bridge{k}   bridge   b_k(s_k), k < L: an early exit,    position k + 0.5, on_path false
        bridge{L}   bridge   b_L(s_L)                           position L + 1
        decoder{k}  decoder  h_k(...) along h_1(...h_L(b_L))    position 2L + 2 - k
    BP  block{k}    encoder  same encoders                      position k
        head{j}     head     model.head[j-1], j = 1..L+1        position L + j

so BP ``head1`` joins AL ``bridge{L}`` and BP ``head{j}`` (j >= 2) joins AL ``decoder{L-j+2}``.
The other learning rules (docs/METHOD.md) share the encoder positions, so every rule's ``block{k}``
lines up with every other's, and a head hanging off block k sits at k + 0.5 (off the path)::

    AL-E2E      as AL (same modules, same inference path)
    SCPL  block{k}    encoder     same encoders                       position k
          proj{k}     projection  p_k(s_k), the contrastive space     position k + 0.5, on_path false
          head{j}     head        model.head[j-1], j = 1, 2           position L + j
    DGL   block{k}    encoder     same encoders                       position k
          exit{k}     exit        a_k(s_k), k < L: class scores       position k + 0.5, on_path false
          head{j}     head        a_L's j-th stage with parameters    position L + j (the last: scores)

An off-path layer carries ``source = k``: `capture` computes it from block k's live output (one
``model(x)`` fills it; see hooks.py); on-path layers have ``source = 0``.

What this is not: no hooks (``hooks``), no files; it only names and orders a model's modules.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from ..errors import UserError


@dataclass(frozen=True)
class LayerInfo:
    """One extractable layer: its name, module and place along the inference path."""

    name: str
    role: str  # encoder / bridge / decoder / head / projection / exit (or "module" for other nets)
    position: float  # int on the inference path; k + 0.5 for a head off block k (AL's early-exit bridges)
    on_path: bool
    match: str  # identical for aligned layers of every rule
    module: nn.Module = field(repr=False, compare=False)
    source: int = 0  # off the path: computed from block `source`'s output by capture; 0: by model(x)

    def to_dict(self) -> dict:
        return {"name": self.name, "role": self.role, "position": self.position,
                "on_path": self.on_path, "match": self.match}


KNOWN_METHODS = ("al", "bp", "al-e2e", "scpl", "dgl")  # models with a layer map (alviz.models)


def _pos_key(position) -> str:
    return f"p{position:g}"


def layer_catalogue(model: nn.Module) -> list[LayerInfo]:
    """The layers of an alviz model (AL, BP, al-e2e, SCPL, DGL), sorted by position (see the
    module docstring)."""
    method = getattr(model, "method", None)
    L = len(model.blocks) if hasattr(model, "blocks") else 0
    out: list[LayerInfo] = []

    def add(name, role, position, module, on_path=True, source=0):
        out.append(LayerInfo(name, role, position, on_path, _pos_key(position), module, source))

    if method not in KNOWN_METHODS:
        raise UserError(f"no layer catalogue for a {type(model).__name__}; alviz knows the models of "
                        f"{', '.join(KNOWN_METHODS)} (for another module, pass its submodule names to capture)")
    for k in range(1, L + 1):
        add(f"block{k}", "encoder", k, model.blocks[k - 1])
    if method in ("al", "al-e2e"):
        for k in range(1, L):
            add(f"bridge{k}", "bridge", k + 0.5, model.bridges[k - 1], on_path=False, source=k)
        add(f"bridge{L}", "bridge", L + 1, model.bridges[L - 1])
        for k in range(L, 0, -1):
            add(f"decoder{k}", "decoder", 2 * L + 2 - k, model.decoders[k - 1])
    elif method in ("bp", "scpl"):
        if method == "scpl":
            for k in range(1, L + 1):
                add(f"proj{k}", "projection", k + 0.5, model.projections[k - 1], on_path=False, source=k)
        for j in range(1, len(model.head) + 1):
            add(f"head{j}", "head", L + j, model.head[j - 1])
    elif method == "dgl":
        for k in range(1, L):
            add(f"exit{k}", "exit", k + 0.5, model.aux[k - 1], on_path=False, source=k)
        stages = [m for m in model.aux[L - 1].children() if any(True for _ in m.parameters())]
        for j, m in enumerate(stages, start=1):
            add(f"head{j}", "head", L + j, m)
    return sorted(out, key=lambda e: e.position)


def select_layers(model: nn.Module, layers) -> list[LayerInfo]:
    """Validate `layers` (names; None: all) against the model's catalogue; the chosen entries in
    catalogue order. An unknown name is a UserError that lists the valid ones."""
    if getattr(model, "method", None) in KNOWN_METHODS:
        cat = layer_catalogue(model)
    else:  # any other module: its named submodules, in definition order
        cat = [LayerInfo(n, "module", i, True, _pos_key(i), m)
               for i, (n, m) in enumerate(model.named_modules()) if n]
        if layers is None:
            raise UserError(f"name the layers to capture of a {type(model).__name__}; valid: "
                            f"{', '.join(e.name for e in cat)}")
    if layers is None:
        return cat
    if isinstance(layers, str):
        layers = [layers]
    wanted = [str(n).strip() for n in layers if str(n).strip()]
    valid = [e.name for e in cat]
    unknown = [n for n in wanted if n not in valid]
    if unknown:
        raise UserError(f"unknown layer(s) {', '.join(map(repr, unknown))}; valid layers: {', '.join(valid)}")
    if not wanted:
        raise UserError(f"no layer named; valid layers: {', '.join(valid)}")
    return [e for e in cat if e.name in set(wanted)]


def parse_layers(spec: str | None) -> list[str] | None:
    """`--layers block1,bridge2` -> ['block1', 'bridge2']; None or empty -> None (all)."""
    if spec is None:
        return None
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        raise UserError(f"--layers must be comma-separated layer names; received {spec!r}")
    return names
