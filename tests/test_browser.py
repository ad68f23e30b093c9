"""report.html in a real browser (Chromium driven by Playwright, headless, offline): the page loads
with zero network requests and zero console errors; hovering a point shows its tooltip inside the
window, also at the right edge; every filter shows as many points as the data says; searching a
sample id pins it and lists its neighbours; a drag and the reset button clear the tooltip and
the ring; the wheel scrolls the page until a panel is clicked; with the link on, zooming or
dragging one panel moves every panel alike (and with it off, none of the others); nothing
scrolls sideways at 420 px. The real report (an analysed experiment) is tests/test_browser_report.py. Screenshots at 1,400, 800 and 420 px are written to $ALVIZ_ARTIFACTS (default: the
test's temporary folder) for a reader.

Skipped, with the reason, only when Playwright or a Chromium executable is missing (set
ALVIZ_BROWSER to one); .ci/run installs both and sets ALVIZ_REQUIRE_BROWSER=1, which turns the
skip into a failure.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from browser_util import (count, open_page, settle, skip_reason, synthetic_thumbs,
                          synthetic_tsne, write_page)

WHY = skip_reason()
pytestmark = pytest.mark.skipif(WHY is not None, reason=WHY or "")

N = 200


@pytest.fixture(scope="module")
def data():
    return synthetic_tsne(n=N, classes=4, cols=2)


@pytest.fixture(scope="module")
def page_path(tmp_path_factory, data):
    return write_page(tmp_path_factory.mktemp("page"), data, thumbs=synthetic_thumbs(N, 8, 8, 3))


def test_loads_offline_without_errors(browser, page_path, artifacts):
    for width in (1400, 800, 420):
        page = open_page(browser, page_path, width)
        assert page.log["errors"] == []
        assert [u for u in page.log["requests"] if not u.startswith("data:")] == [page_path.as_uri()]
        assert count(page) == N and page.evaluate("alvizViewer.panels()") == 4
        assert page.evaluate("document.documentElement.scrollWidth") <= width  # no sideways scroll
        page.locator("#tv").scroll_into_view_if_needed()
        page.screenshot(path=str(artifacts / f"synthetic-{width}.png"))
        if width == 420:  # panels stay usable: two per row, not five squeezed ones
            w = page.evaluate("document.querySelector('#tv canvas').getBoundingClientRect().width")
            assert w > 150
        page.close()


def test_hover_shows_tooltip_inside_the_window(browser, page_path, artifacts):
    page = open_page(browser, page_path, 900, 700)
    page.locator("#tv canvas").first.scroll_into_view_if_needed()
    settle(page)
    # the right-most point of the right-most panel of the first row: the tooltip must flip left
    xs = page.evaluate("JSON.parse(document.getElementById('alviz-tsne').textContent).panels[1].x")
    i = int(np.argmax(xs))
    x, y = page.evaluate(f"alvizViewer.screen(1, {i})")
    page.mouse.move(x, y)
    tip = page.locator("#tv .tip")
    tip.wait_for(state="visible")
    assert "sample id" in tip.inner_text() and "predicted" in tip.inner_text()
    box = tip.bounding_box()
    vw, vh = page.evaluate("[document.documentElement.clientWidth, innerHeight]")
    assert box["x"] >= 0 and box["y"] >= 0 and box["x"] + box["width"] <= vw and box["y"] + box["height"] <= vh
    page.screenshot(path=str(artifacts / "synthetic-hover-900.png"))
    # a drag hides the tooltip and the hover ring
    page.mouse.down()
    page.mouse.move(x - 40, y - 30, steps=4)
    assert not tip.is_visible()
    page.mouse.up()
    page.close()


def expected_counts(data):
    y = data["labels"]
    al = data["pred"]["al"][0] == y
    bp = data["pred"]["bp"][0] == y
    return {"all": len(y), "wrong": int((~al | ~bp).sum()), "only0": int((al & ~bp).sum()),
            "only1": int((bp & ~al).sum()), "right": int((al & bp).sum())}


def test_each_filter_shows_the_points_the_data_says(browser, page_path, data):
    page = open_page(browser, page_path)
    want = expected_counts(data)
    assert page.evaluate("alvizViewer.filters") == list(want)
    for name, n in want.items():
        page.select_option("#tv-filter", name)
        assert count(page) == n, name
        assert 0 < n <= N
    page.select_option("#tv-filter", "wrong")
    page.select_option("#tv-class", "2")  # one class, combined with the correctness filter
    y = data["labels"]
    wrong = (data["pred"]["al"][0] != y) | (data["pred"]["bp"][0] != y)
    assert count(page) == int((wrong & (y == 2)).sum())
    page.select_option("#tv-filter", "all")
    assert count(page) == int((y == 2).sum())
    page.select_option("#tv-class", "-1")
    page.locator("#tv .legend button").nth(0).click()  # hide class 0 from the legend (a button)
    assert count(page) == int((y != 0).sum())
    page.close()


def test_search_pins_a_sample_and_lists_its_neighbours(browser, page_path, data, artifacts):
    page = open_page(browser, page_path)
    sid = int(data["ids"][17])
    page.fill("#tv-search", str(sid))
    page.press("#tv-search", "Enter")
    assert page.evaluate("alvizViewer.pinned()") == sid
    items = page.locator("#tv .pin ol li")
    assert items.count() == 5
    first_nn = int(data["neighbours"][("al", 1.0)][17][0])
    assert f"id {int(data['ids'][first_nn])}" in items.nth(0).inner_text()
    page.locator("#tv .pin").scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts / "synthetic-pinned-1400.png"))
    items.nth(0).locator("button").click()  # a neighbour pins itself
    assert page.evaluate("alvizViewer.pinned()") == int(data["ids"][first_nn])
    page.fill("#tv-search", "99999999")
    page.press("#tv-search", "Enter")
    assert "is not among" in page.inner_text("#tv [role=status]")
    page.click("#tv-reset")  # reset clears the pin, the tooltip and the ring
    assert page.evaluate("alvizViewer.pinned()") is None
    assert page.locator("#tv .pin ol").count() == 0
    page.close()


def test_wheel_scrolls_the_page_until_a_panel_is_clicked(browser, page_path):
    page = open_page(browser, page_path, 1000, 700)
    canvas = page.locator("#tv canvas").first
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx, cy)
    before = page.evaluate("scrollY")
    page.mouse.wheel(0, 300)
    page.wait_for_function(f"scrollY > {before}")  # the page scrolled: not trapped by the panel
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    page.mouse.click(box["x"] + 3, box["y"] + 3)  # a click in an empty corner: the panel takes the wheel
    assert page.evaluate("alvizViewer.active()") == 0
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    y0 = page.evaluate("scrollY")
    page.mouse.wheel(0, -200)
    page.wait_for_timeout(200)
    assert page.evaluate("scrollY") == y0  # zoomed instead of scrolling
    canvas.focus()
    page.keyboard.press("0")  # keyboard: reset the panel
    page.close()


def views(page):
    return [page.evaluate(f"alvizViewer.view({i})") for i in range(page.evaluate("alvizViewer.panels()"))]


def same_view(a, b):
    return all(abs(a[key] - b[key]) <= 1e-9 * max(1.0, abs(a[key])) for key in ("z", "x", "y"))


HOME = {"z": 1, "x": 0, "y": 0}


def test_linked_zoom_and_pan_moves_every_panel_alike(browser, page_path):
    """With "link zoom and pan" on, zooming one panel (after a click, and with ctrl + wheel) and
    dragging it give every panel the same zoom and the same offset from its home (in units of its
    own span); with the link off the other panels stay where they are."""
    page = open_page(browser, page_path, 1000, 800)
    canvases = page.locator("#tv canvas")
    assert canvases.count() == 4 and views(page) == [HOME] * 4

    def zoom_panel(i, ctrl):
        c = canvases.nth(i)
        c.scroll_into_view_if_needed()
        box = c.bounding_box()
        if not ctrl:  # a click in an empty corner: the panel takes the wheel
            page.mouse.click(box["x"] + 3, box["y"] + 3)
            assert page.evaluate("alvizViewer.active()") == i
        page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.6)  # off-centre: zoom moves the centre
        if ctrl:
            page.keyboard.down("Control")
        page.mouse.wheel(0, -300)
        if ctrl:
            page.keyboard.up("Control")
        page.wait_for_timeout(100)
        return box

    # link off: only the zoomed panel changes
    zoom_panel(1, ctrl=False)
    v = views(page)
    assert v[1]["z"] > 1.2 and (v[1]["x"], v[1]["y"]) != (0, 0)
    assert v[0] == HOME and v[2] == HOME and v[3] == HOME
    page.click("#tv-reset")
    assert views(page) == [HOME] * 4

    # link on: every panel takes the zoomed panel's transform, ctrl + wheel and a click-then-wheel alike
    page.check("#tv-link")
    assert page.evaluate("alvizViewer.linked()")
    for i, ctrl in ((2, True), (0, False)):
        zoom_panel(i, ctrl)
        v = views(page)
        assert v[i]["z"] > 1.2, (i, ctrl, v)
        assert all(same_view(u, v[i]) for u in v), (i, ctrl, v)
    # a drag in one panel pans every panel alike
    box = canvases.nth(3).bounding_box()
    before = views(page)[3]
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2 + 60, box["y"] + box["height"] / 2 + 25, steps=5)
    page.mouse.up()
    v = views(page)
    assert v[3]["x"] < before["x"] and v[3]["y"] > before["y"]  # dragged right and down: the view moves left and up
    assert all(same_view(u, v[3]) for u in v), v

    # link off again: a zoom leaves the others where they were
    page.uncheck("#tv-link")
    held = views(page)
    zoom_panel(0, ctrl=True)
    v = views(page)
    assert v[0]["z"] > held[0]["z"] and v[1:] == held[1:]
    # turning the link on aligns every panel with the active panel at once
    page.check("#tv-link")
    page.wait_for_timeout(100)
    v = views(page)
    active = page.evaluate("alvizViewer.active()")
    assert all(same_view(u, v[active if active >= 0 else 0]) for u in v), v
    page.click("#tv-reset")
    assert views(page) == [HOME] * 4
    assert page.log["errors"] == []
    page.close()


def test_bench_viewer_quick(tmp_path):
    """bench/bench_viewer.py runs (quick: 200 points) and writes the figures it promises."""
    import json
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "viewer.json"
    r = subprocess.run([sys.executable, "bench/bench_viewer.py", "--quick", "--json", str(out)], cwd=root,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["points"] == 200 and res["page_mb"] > 0 and res["open_to_first_frame_s"]["median"] > 0
    assert "| points | panels |" in r.stdout
