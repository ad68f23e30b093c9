"""Screenshots of a report's viewer for readers (docs/screenshots/), in headless Chromium.

    python bench/report_screenshots.py REPORT.html OUT_DIR

Writes viewer-1400.png, viewer-800.png, viewer-420.png (the viewer at each window width),
hover-1400.png (a point's tooltip) and pinned-1400.png (a pinned point and its nearest
neighbours). Not a test and not a benchmark: nothing is measured or asserted.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def main(report: str, out: str) -> None:
    from playwright.sync_api import sync_playwright

    from browser_util import browser_executable, launch

    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    uri = Path(report).resolve().as_uri()
    with sync_playwright() as p:
        browser = launch(p, browser_executable())
        for width in (1400, 800, 420):
            page = browser.new_page(viewport={"width": width, "height": 900})
            page.goto(uri)
            page.wait_for_function("window.alvizViewer !== undefined")
            page.locator("#tv").scroll_into_view_if_needed()
            page.evaluate("document.getElementById('tv').scrollIntoView()")
            page.wait_for_timeout(300)
            page.screenshot(path=str(out_dir / f"viewer-{width}.png"))
            if width == 1400:
                x, y = page.evaluate("alvizViewer.screen(3, 17)")
                page.mouse.move(x, y)
                page.wait_for_timeout(200)
                page.screenshot(path=str(out_dir / "hover-1400.png"))
                page.mouse.click(x, y)
                page.mouse.move(5, 5)
                page.locator("#tv .pin").scroll_into_view_if_needed()
                page.wait_for_timeout(200)
                page.screenshot(path=str(out_dir / "pinned-1400.png"))
            page.close()
        browser.close()


if __name__ == "__main__":
    main(*sys.argv[1:3])
