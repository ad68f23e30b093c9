"""The interactive t-SNE viewer of ``report.html``: its data (panels, labels, sample ids, each
run's predictions, nearest neighbours, colours, a seeded drawing order, a thumbnail sprite) and
the HTML block that holds it with ``assets/viewer.js``.

What this is not: no t-SNE (``tsne``), no page layout (``document``); the viewer's behaviour lives
in ``assets/viewer.js`` and its look in ``assets/report.css``.
"""
from __future__ import annotations

import base64
import io
import math

import numpy as np

from .document import asset, script_json
from .runs import RunInfo


def thumbnails(info: RunInfo, ids: np.ndarray, log):
    """uint8 thumbnails (N, H, W, C) of the samples ``ids`` for image data sets, else None."""
    try:
        from ..data import load_raw

        raw = load_raw(info.config["dataset"], data_dir=info.config.get("data_dir", "data"),
                       test_fraction=info.config.get("test_fraction", 0.2))
    except Exception as e:  # thumbnails are a convenience: never fail the report for them
        log(f"no image thumbnails in report.html ({type(e).__name__}: {str(e)[:80]})")
        return None
    if not raw.image:
        return None
    lookup = {int(i): ("test", k) for k, i in enumerate(np.asarray(raw.ids_test).tolist())}
    out = []
    for i in ids.tolist():
        where = lookup.get(int(i))
        if where is None:
            return None
        out.append(raw.x_test[where[1]])
    x = np.stack(out).astype(np.float64)
    if x.ndim == 3:
        x = x[:, None]
    x = np.transpose(x, (0, 2, 3, 1))  # NHWC
    if raw.x_test.dtype == np.uint8:
        pass
    elif raw.pixel_max:
        x = x / raw.pixel_max * 255.0
    else:
        lo = x.min(axis=(1, 2, 3), keepdims=True)
        hi = x.max(axis=(1, 2, 3), keepdims=True)
        x = (x - lo) / np.maximum(hi - lo, 1e-12) * 255.0
    x = np.clip(np.round(x), 0, 255).astype(np.uint8)
    if x.shape[1] > 32 or x.shape[2] > 32:  # keep the report small: at most 32 x 32
        step = int(math.ceil(max(x.shape[1], x.shape[2]) / 32))
        x = x[:, ::step, ::step]
    return x


def sprite(thumbs: np.ndarray) -> tuple[np.ndarray, int]:
    """The thumbnails (N, H, W, C) tiled row by row into one (rows*H, cols*W, C) image with
    ``cols = ceil(sqrt(N))`` (TensorBoard's sprite layout); returns (image, cols)."""
    n, h, w, c = thumbs.shape
    cols = max(1, int(math.ceil(math.sqrt(n))))
    rows = int(math.ceil(n / cols))
    out = np.full((rows * h, cols * w, c), 255, dtype=np.uint8)
    for i in range(n):
        r, q = divmod(i, cols)
        out[r * h:(r + 1) * h, q * w:(q + 1) * w] = thumbs[i]
    return out, cols


def encode_image(img: np.ndarray, fmt: str) -> bytes:
    """PNG (lossless: grey images) or JPEG (quality 90: colour photographs) bytes of a uint8
    (H, W, C) image; C is 1 or 3."""
    from PIL import Image

    im = Image.fromarray(img[:, :, 0] if img.shape[2] == 1 else img[:, :, :3])
    buf = io.BytesIO()
    if fmt == "jpeg":
        im.save(buf, format="JPEG", quality=90, subsampling=0)
    else:
        im.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def sprite_format(thumbs: np.ndarray) -> str:
    return "png" if thumbs.shape[3] == 1 else "jpeg"


def viewer_payload(tsne_data, class_names, colors, thumbs, *, groups=None, seed: int = 0) -> dict:
    """Everything the viewer draws, as JSON-able lists. ``groups``: optional (names, group of
    each class) when classes are coloured by a superclass."""
    from .. import plots

    labels = np.asarray(tsne_data["labels"])
    n = len(labels)
    nn = tsne_data.get("neighbours") or {}
    shift = tsne_data.get("shift") or {}
    panels = []
    for m in tsne_data["rows"]:
        for p in tsne_data["cols"]:
            Y = tsne_data["panels"].get((m, p))
            if Y is None:
                panels.append(None)
                continue
            panel = {"title": tsne_data["titles"][(m, p)],
                     "x": [round(float(v), 3) for v in Y[:, 0]],
                     "y": [round(float(v), 3) for v in Y[:, 1]]}
            if (m, p) in nn:
                panel["nn"] = np.asarray(nn[(m, p)]).ravel().tolist()
                panel["k"] = int(np.asarray(nn[(m, p)]).shape[1])
            if (m, p) in shift:
                panel["shift"] = round(float(shift[(m, p)]), 4)
            panels.append(panel)
    preds = {}
    for m, (pred, conf) in (tsne_data.get("pred") or {}).items():
        preds[plots.method_style(m)["label"]] = {
            "pred": [int(v) for v in pred],
            "conf": None if conf is None else [round(float(v), 3) for v in conf]}
    payload = {
        "rows": [plots.method_style(m)["label"] for m in tsne_data["rows"]],
        "cols": [f"{p:g}" for p in tsne_data["cols"]],
        "panels": panels,
        "labels": [int(v) for v in labels],
        "ids": [int(v) for v in tsne_data["ids"]],
        # a seeded random drawing order: no class is always drawn on top of the others
        "order": np.random.default_rng(seed).permutation(n).tolist(),
        "classNames": list(class_names),
        "colors": list(colors),
        "groups": None if groups is None else {"names": list(groups[0]), "of": [int(g) for g in groups[1]]},
        "pred": preds,
        "reference": plots.method_style(tsne_data["reference"][0])["label"] + " "
                     + tsne_data["titles"][tsne_data["reference"]] if "reference" in tsne_data else None,
        "pointSize": 1.6 if n > 1000 else 2.4,
        "thumb": None,
    }
    if thumbs is not None:
        img, cols = sprite(thumbs)
        fmt = sprite_format(thumbs)
        payload["thumb"] = {"h": int(thumbs.shape[1]), "w": int(thumbs.shape[2]), "cols": cols,
                            "src": f"data:image/{fmt};base64," + base64.b64encode(encode_image(img, fmt)).decode("ascii")}
    return payload


def viewer_block(payload: dict) -> tuple[str, str]:
    """(HTML, Markdown) of the viewer section: its data as JSON in a script element and
    ``assets/viewer.js`` inlined after it (the page stays one file that works offline)."""
    thumbs = payload.get("thumb") is not None
    preds = bool(payload.get("pred"))
    html_text = ("<p class=\"note\"><span class=\"interactive\">Drag to pan; zoom with ctrl/cmd + wheel, or "
                 "click a panel first and then use the wheel (the page scrolls otherwise); with \u201clink zoom "
                 "and pan\u201d on, every panel follows. Keys in a focused panel: arrows pan, + and - zoom, 0 "
                 "resets. Hovering a point shows its class, sample id"
                 + (", each run's prediction and confidence" if preds else "")
                 + (" and image" if thumbs else "") + " and rings the same sample in every panel; clicking "
                 "pins it and lists its nearest neighbours in that layer.</span> Labels sit at each class's "
                 "centroid; every panel starts from the layout of the reference panel"
                 + (f" ({payload['reference']})" if payload.get("reference") else "")
                 + ", so classes tend to keep their region; how far each panel's classes still move from "
                 "it is given below the grid.</p><div id=\"tv\"></div>"
                 f"<script type=\"application/json\" id=\"alviz-tsne\">{script_json(payload)}</script>"
                 f"<script>{asset('viewer.js')}</script>")
    md = ("The interactive t-SNE viewer (filters by class and correctness, search by sample id, pinned "
          "points with their nearest neighbours, zoom, hover for class, sample id and image) is in `report.html`.")
    return html_text, md
