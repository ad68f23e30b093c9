"""The interactive t-SNE viewer of ``report.html``: its data (panels, labels, sample ids, colours,
image thumbnails) and the HTML block that holds it with ``assets/viewer.js``.

What this is not: no t-SNE (``tsne``), no page layout (``document``); the viewer's behaviour lives
in ``assets/viewer.js`` and its look in ``assets/report.css``.
"""
from __future__ import annotations

import base64
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


def viewer_payload(tsne_data, class_names, colors, thumbs) -> dict:
    from .. import plots

    panels = []
    for m in tsne_data["rows"]:
        for p in tsne_data["cols"]:
            Y = tsne_data["panels"].get((m, p))
            if Y is None:
                panels.append(None)
                continue
            panels.append({"title": tsne_data["titles"][(m, p)],
                           "x": [round(float(v), 3) for v in Y[:, 0]],
                           "y": [round(float(v), 3) for v in Y[:, 1]]})
    payload = {
        "rows": [plots.method_style(m)["label"] for m in tsne_data["rows"]],
        "cols": [f"{p:g}" for p in tsne_data["cols"]],
        "panels": panels,
        "labels": [int(v) for v in tsne_data["labels"]],
        "ids": [int(v) for v in tsne_data["ids"]],
        "classNames": list(class_names),
        "colors": list(colors),
        "pointSize": 1.6 if tsne_data["n"] > 1000 else 2.4,
        "thumb": None,
    }
    if thumbs is not None:
        payload["thumb"] = {"h": int(thumbs.shape[1]), "w": int(thumbs.shape[2]), "c": int(thumbs.shape[3]),
                            "b64": base64.b64encode(np.ascontiguousarray(thumbs).tobytes()).decode("ascii")}
    return payload


def viewer_block(payload: dict) -> tuple[str, str]:
    """(HTML, Markdown) of the viewer section: its data as JSON in a script element and
    ``assets/viewer.js`` inlined after it (the page stays one file that works offline)."""
    thumbs = payload.get("thumb") is not None
    html_text = ("<p class=\"note\">Scroll to zoom, drag to pan, double-click to reset a panel. Hovering a "
                 "point shows its class, sample id" + (" and image" if thumbs else "") +
                 ", and rings the same sample in every panel.</p><div id=\"tv\"></div>"
                 f"<script type=\"application/json\" id=\"alviz-tsne\">{script_json(payload)}</script>"
                 f"<script>{asset('viewer.js')}</script>")
    md = "The interactive t-SNE viewer (zoom, hover for class, sample id and image) is in `report.html`."
    return html_text, md
