"""Helpers of the real-browser tests (tests/test_browser.py, tests/test_browser_report.py) and
bench/bench_viewer.py: find a Chromium executable, launch it with Playwright (offline, no
download), say why the browser tests are skipped, open a page and log its console errors and
requests, and write a report page around a synthetic viewer payload whose per-sample answers are
known.

What this is not: no test (nothing here asserts), no part of the alviz package.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-extensions", "--no-first-run", "--disable-sync", "--disable-component-update"]


def browser_executable() -> str | None:
    """$ALVIZ_BROWSER, else the first Chromium on the PATH (Debian's package: /usr/bin/chromium)."""
    env = os.environ.get("ALVIZ_BROWSER")
    if env:
        return env if Path(env).is_file() else None
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def launch(playwright, executable: str):
    return playwright.chromium.launch(executable_path=executable, headless=True, args=ARGS)


def skip_reason() -> str | None:
    """Why the browser tests cannot run here (None: they can). With ALVIZ_REQUIRE_BROWSER set (.ci/run
    sets it), a missing browser is an error instead of a skip."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:  # pragma: no cover - CI installs it (dev extra)
        why = "Playwright for Python is not installed (pip install -e '.[dev]')"
    else:
        why = ("no Chromium executable found (apt-get install chromium, or set ALVIZ_BROWSER)"
               if browser_executable() is None else None)
    if why and os.environ.get("ALVIZ_REQUIRE_BROWSER"):
        raise RuntimeError(f"ALVIZ_REQUIRE_BROWSER is set but {why}")
    return why


def artifacts_folder(tmp_path_factory) -> Path:
    """$ALVIZ_ARTIFACTS (screenshots and PDFs for a reader), else a temporary folder."""
    folder = Path(os.environ.get("ALVIZ_ARTIFACTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def open_page(browser, path, width=1400, height=900):
    """A new page of ``width`` x ``height`` at ``path`` once its viewer is drawn; ``page.log`` holds
    its console errors and the URLs it requested."""
    page = browser.new_page(viewport={"width": width, "height": height})
    page.log = {"errors": [], "requests": []}
    page.on("console", lambda m: page.log["errors"].append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: page.log["errors"].append(str(e)))
    page.on("request", lambda r: page.log["requests"].append(r.url))
    page.goto(path.as_uri())
    page.wait_for_function("window.alvizViewer !== undefined")
    page.wait_for_timeout(100)  # one animation frame: the panels are drawn
    return page


def settle(page) -> None:
    """Wait two animation frames: the scroll events of a scroll just made have fired (the viewer hides
    its tooltip on scroll, so a hover before they fire can be undone by them)."""
    page.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")


def count(page, viewer="tv") -> int:
    """The number of points the viewer says it shows."""
    return int(page.get_attribute(f"#{viewer}-count", "data-visible"))


def synthetic_tsne(n: int = 200, classes: int = 4, cols: int = 2, seed: int = 0, k: int = 5):
    """A t-SNE result of two runs (al, bp) with known predictions: class c's points sit around
    angle 2 pi c / classes in every panel; AL is wrong on every 7th point, BP on every 5th."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    ids = 1000 + 3 * np.arange(n)
    angle = 2 * np.pi * labels / classes
    panels, titles, nn, shift = {}, {}, {}, {}
    for m in ("al", "bp"):
        for j in range(cols):
            Y = np.c_[np.cos(angle), np.sin(angle)] * 10 + rng.normal(size=(n, 2)) * (1 + j)
            panels[(m, float(j + 1))] = Y
            titles[(m, float(j + 1))] = f"layer{j + 1}"
            d = ((Y[:, None, :] - Y[None, :, :]) ** 2).sum(-1)
            np.fill_diagonal(d, np.inf)
            nn[(m, float(j + 1))] = np.argsort(d, axis=1)[:, :k].astype(np.int32)
            shift[(m, float(j + 1))] = 0.1 * j
    pred_al = labels.copy()
    pred_al[::7] = (labels[::7] + 1) % classes
    pred_bp = labels.copy()
    pred_bp[::5] = (labels[::5] + 1) % classes
    conf = np.linspace(0.3, 1.0, n).astype(np.float32)
    return {"rows": ["al", "bp"], "cols": [float(j + 1) for j in range(cols)], "panels": panels,
            "titles": titles, "labels": labels, "ids": ids, "n": n, "reference": ("al", float(cols)),
            "neighbours": nn, "shift": shift, "pred": {"al": (pred_al, conf), "bp": (pred_bp, conf)},
            "perplexity": 30.0, "runs": {"al": "al-seed0", "bp": "bp-seed0"}}


def synthetic_thumbs(n: int, h: int = 32, w: int = 32, c: int = 3, seed: int = 0) -> np.ndarray:
    """Colour thumbnails with CIFAR-like content: smooth colour gradients plus pixel noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = rng.uniform(0, 255, size=(n, 1, 1, c)) * (0.5 + 0.5 * xx[None, :, :, None]) \
        + rng.uniform(-60, 60, size=(n, 1, 1, c)) * yy[None, :, :, None]
    return np.clip(base + rng.normal(0, 25, size=(n, h, w, c)), 0, 255).astype(np.uint8)


def write_page(folder: Path, tsne_data, thumbs=None, class_names=None) -> Path:
    """report.html with the viewer of ``tsne_data`` (and nothing else), as analyze writes it."""
    from alviz import plots
    from alviz.report.document import Doc, script_json
    from alviz.report.viewer import viewer_block, viewer_payload

    classes = int(np.max(tsne_data["labels"])) + 1
    names = class_names or [f"class{c}" for c in range(classes)]
    groups = plots.class_groups(names)
    colors = plots.class_colors(classes, None if groups is None else groups[1])
    doc = Doc("viewer test page")
    doc.p("Text above the viewer. " * 40)
    doc.h("Interactive t-SNE")
    doc.raw_html(*viewer_block(viewer_payload(tsne_data, names, colors, thumbs, groups=groups)))
    doc.h("After")
    doc.p("Text below the viewer, so the page can scroll. " * 200)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "report.html"
    path.write_text(doc.html(script_json({"experiment": "synthetic"})), encoding="utf-8")
    return path
