"""Benchmark the report's t-SNE viewer in a real browser at CIFAR size: how large the page is and
how long it takes to open.

    python bench/bench_viewer.py [--quick] [--repeats N] [--json PATH] [--shots DIR]

Builds a report page around a synthetic viewer payload of CIFAR size (2,000 points, 10 classes,
2 runs x 5 layers, each run's predictions and confidences, 8 nearest neighbours per point and
panel, 32 x 32 colour thumbnails with CIFAR-like content: smooth colour gradients plus pixel
noise, which JPEG compresses worse than photographs), writes it as analyze does, and opens it
in headless Chromium (Playwright, the executable of tests/browser_util.py) N times, each in a
fresh page: the time from navigation to the viewer's first drawn frame (``window.alvizViewer``
defined and one animation frame later), and the browser's own navigation timing
(domContentLoaded, load). Reports the median and the spread, the page's size and the share of
the thumbnails. ``--quick``: 200 points, 2 repeats (checks the script, not the targets).

Target (issue 16): a CIFAR-sized report opens in under 2 s and stays under about 10 MB.
Timings are wall-clock on whatever else the machine runs: the load average is recorded beside
them. Not a test: nothing is asserted.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def run(quick: bool = False, repeats: int | None = None, shots: str | None = None) -> dict:
    from playwright.sync_api import sync_playwright

    from browser_util import browser_executable, launch, synthetic_thumbs, synthetic_tsne, write_page

    exe = browser_executable()
    if exe is None:
        raise RuntimeError("no Chromium executable (apt-get install chromium, or set ALVIZ_BROWSER)")
    n = 200 if quick else 2000
    repeats = repeats or (2 if quick else 7)
    tmp = Path(tempfile.mkdtemp(prefix="alviz-bench-viewer-"))
    t = time.perf_counter()
    data = synthetic_tsne(n=n, classes=10, cols=5, k=8)
    thumbs = synthetic_thumbs(n, 32, 32, 3)
    path = write_page(tmp, data, thumbs=thumbs, class_names=[f"c{c}" for c in range(10)])
    build_s = time.perf_counter() - t
    text = path.read_text()
    start = text.index('"src": "data:image/jpeg;base64,') if '"src": "data:image/jpeg;base64,' in text else -1
    sprite_bytes = (text.index('"', start + 8) - start) if start >= 0 else 0
    load_before = os.getloadavg()
    ready, dcl, load = [], [], []
    with sync_playwright() as p:
        browser = launch(p, exe)
        for r in range(repeats + 1):  # the first opening warms the browser's caches: not counted
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            t0 = time.perf_counter()
            page.goto(path.as_uri())
            page.wait_for_function("window.alvizViewer !== undefined")
            page.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
            t1 = time.perf_counter()
            nav = page.evaluate("(() => { const e = performance.getEntriesByType('navigation')[0]; "
                                "return [e.domContentLoadedEventEnd, e.loadEventEnd]; })()")
            if errors:
                raise RuntimeError(f"page errors: {errors}")
            if r > 0:
                ready.append(t1 - t0)
                dcl.append(nav[0] / 1000)
                load.append(nav[1] / 1000)
            if shots and r == 0:
                Path(shots).mkdir(parents=True, exist_ok=True)
                page.locator("#tv").scroll_into_view_if_needed()
                page.screenshot(path=str(Path(shots) / f"bench-viewer-{n}.png"))
            page.close()
        browser.close()

    def stats(v):
        return {"median": round(statistics.median(v), 3), "min": round(min(v), 3), "max": round(max(v), 3),
                "runs": [round(x, 3) for x in v]}

    return {"points": n, "panels": 10, "classes": 10, "thumb": "32x32x3", "repeats": repeats,
            "page_mb": round(path.stat().st_size / 1e6, 2), "sprite_mb": round(sprite_bytes / 1e6, 2),
            "build_s": round(build_s, 2), "open_to_first_frame_s": stats(ready),
            "dom_content_loaded_s": stats(dcl), "load_event_s": stats(load),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()], "browser": exe}


def table(res: dict) -> str:
    o = res["open_to_first_frame_s"]
    return "\n".join([
        "| points | panels | page MB (of which thumbnails) | open to first frame s, median [min, max] | "
        "DOMContentLoaded s | load s | load average |",
        "|---|---|---|---|---|---|---|",
        f"| {res['points']} | {res['panels']} | {res['page_mb']} ({res['sprite_mb']}) | {o['median']} "
        f"[{o['min']}, {o['max']}] ({res['repeats']} runs) | {res['dom_content_loaded_s']['median']} | "
        f"{res['load_event_s']['median']} | {res['loadavg_before'][0]} -> {res['loadavg_after'][0]} |"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--shots", default=None, help="write a screenshot of the viewer into this folder")
    a = ap.parse_args()
    res = run(a.quick, a.repeats, a.shots)
    print(table(res))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
