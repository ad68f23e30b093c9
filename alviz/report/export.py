"""``alviz analyze --export``: the t-SNE points of an experiment for other tools, under
``<report>/export/``:

    tsne_points.csv        tidy, one row per (sample, panel): sample_id, label, class, method,
                           layer, position, x, y, pred, conf, correct (pred/conf/correct empty
                           when the run's activation set holds no predictions)
    tsne_points.npz        ids (N,), labels (N,), class_names (C,), coords (P, N, 2),
                           panel_method, panel_layer, panel_position (P,), and per method
                           pred_<m> (N,) and conf_<m> (N,) when stored; plain arrays, no pickle
    projector/             a TensorBoard projector bundle: one tensor TSV per panel (the layer's
                           activations of the N points) and one per panel of alviz's 2-D t-SNE,
                           metadata.tsv (sample id, class, predictions), sprite.png (image data
                           sets) and projector_config.pbtxt naming them (point TensorBoard's
                           --logdir at this folder)

What this is not: no t-SNE (``tsne``), no viewer (``viewer``).
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from ..checkpoint import write_bytes_atomic, write_text_atomic
from .files import csv_text, slug

POINT_COLUMNS = ["sample_id", "label", "class", "method", "layer", "position", "x", "y", "pred", "conf", "correct"]


def _panels(tsne_data):
    """(method, position, layer name, aligned 2-D array) of every panel, in grid order."""
    return [(m, p, tsne_data["titles"][(m, p)], tsne_data["panels"][(m, p)])
            for m in tsne_data["rows"] for p in tsne_data["cols"] if (m, p) in tsne_data["panels"]]


def point_rows(tsne_data, class_names) -> list[dict]:
    ids, labels = tsne_data["ids"], tsne_data["labels"]
    preds = tsne_data.get("pred") or {}
    rows = []
    for m, p, layer, Y in _panels(tsne_data):
        pred, conf = preds.get(m, (None, None))
        for i in range(len(ids)):
            c = int(labels[i])
            rows.append({"sample_id": int(ids[i]), "label": c, "class": class_names[c], "method": m,
                         "layer": layer, "position": float(p), "x": float(Y[i, 0]), "y": float(Y[i, 1]),
                         "pred": "" if pred is None else int(pred[i]),
                         "conf": "" if conf is None else float(conf[i]),
                         "correct": "" if pred is None else int(pred[i] == c)})
    return rows


def npz_bytes(tsne_data, class_names) -> bytes:
    panels = _panels(tsne_data)
    arrays = {"ids": np.asarray(tsne_data["ids"], dtype=np.int64),
              "labels": np.asarray(tsne_data["labels"], dtype=np.int64),
              "class_names": np.asarray([str(c) for c in class_names]),
              "coords": np.stack([Y for *_, Y in panels]).astype(np.float32),
              "panel_method": np.asarray([m for m, *_ in panels]),
              "panel_layer": np.asarray([layer for _, _, layer, _ in panels]),
              "panel_position": np.asarray([p for _, p, _, _ in panels], dtype=np.float64)}
    for m, (pred, conf) in (tsne_data.get("pred") or {}).items():
        arrays[f"pred_{m}"] = np.asarray(pred, dtype=np.int64)
        if conf is not None:
            arrays[f"conf_{m}"] = np.asarray(conf, dtype=np.float32)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def tsv(a: np.ndarray) -> str:
    return "".join("\t".join(f"{v:.6g}" for v in row) + "\n" for row in np.asarray(a, dtype=np.float64))


def metadata_tsv(tsne_data, class_names) -> str:
    preds = tsne_data.get("pred") or {}
    head = ["sample_id", "class", "label"]
    for m in preds:
        head += [f"pred_{m}", f"conf_{m}", f"correct_{m}"]
    lines = ["\t".join(head)]
    for i, (sid, c) in enumerate(zip(tsne_data["ids"], tsne_data["labels"])):
        cells = [str(int(sid)), str(class_names[int(c)]).replace("\t", " "), str(int(c))]
        for pred, conf in preds.values():
            cells += [str(class_names[int(pred[i])]), "" if conf is None else f"{float(conf[i]):.4f}",
                      str(int(pred[i] == c))]
        lines.append("\t".join(cells))
    return "\n".join(lines) + "\n"


def projector_config(entries: list[tuple[str, str]], sprite_dim: tuple[int, int] | None) -> str:
    out = []
    for name, path in entries:
        out += ["embeddings {", f'  tensor_name: "{name}"', f'  tensor_path: "{path}"',
                '  metadata_path: "metadata.tsv"']
        if sprite_dim is not None:
            out += ["  sprite {", '    image_path: "sprite.png"', f"    single_image_dim: {sprite_dim[1]}",
                    f"    single_image_dim: {sprite_dim[0]}", "  }"]
        out.append("}")
    return "\n".join(out) + "\n"


def write_exports(folder: Path, tsne_data, class_names, thumbs, log) -> Path:
    """Write the CSV, the NPZ and the projector bundle of one experiment's t-SNE grid."""
    from .viewer import encode_image, sprite

    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / "tsne_points.csv", csv_text(point_rows(tsne_data, class_names), POINT_COLUMNS))
    write_bytes_atomic(folder / "tsne_points.npz", npz_bytes(tsne_data, class_names))
    proj = folder / "projector"
    proj.mkdir(exist_ok=True)
    entries = []
    for m, p, layer, Y in _panels(tsne_data):
        name = f"{slug(m)}_{slug(layer)}"
        Z = tsne_data["Z"][(m, p)]
        write_text_atomic(proj / f"{name}.tsv", tsv(Z))
        write_text_atomic(proj / f"{name}_tsne.tsv", tsv(Y))
        entries += [(f"{m.upper()} {layer}", f"{name}.tsv"), (f"{m.upper()} {layer} (alviz t-SNE)", f"{name}_tsne.tsv")]
    write_text_atomic(proj / "metadata.tsv", metadata_tsv(tsne_data, class_names))
    dim = None
    if thumbs is not None:
        img, _ = sprite(thumbs)
        write_bytes_atomic(proj / "sprite.png", encode_image(img, "png"))
        dim = (int(thumbs.shape[1]), int(thumbs.shape[2]))
    write_text_atomic(proj / "projector_config.pbtxt", projector_config(entries, dim))
    log(f"export: {folder} (tsne_points.csv, tsne_points.npz, projector/ with {len(entries)} tensors)")
    return folder
