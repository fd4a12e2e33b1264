"""Headless Chromium for the report tests: open a page from disk and report what the browser saw.

How, without extra Python packages: a copy of the page, beside it (so relative URLs resolve the
same), gets a script that, once the page has loaded, writes what the browser saw into the DOM;
`chromium --dump-dom` prints that DOM. The `chromium` fixture (conftest.py) finds the browser.
"""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlsplit

CHROMIUM = Path(os.environ.get("FLOWERLAB_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--mute-audio",
]
# The narrowest window the report must be read in whole: a laptop's.
WINDOW = "1280,2400"
# Time the page may take to load and run its scripts (virtual time: not a wall-clock wait).
LOAD_BUDGET_MS = 10_000
CHROMIUM_TIMEOUT_S = 120

PROBE = """
<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images).map(img => ({
    src: img.getAttribute("src").slice(0, 60), complete: img.complete, naturalWidth: img.naturalWidth}));
  const links = Array.from(document.querySelectorAll("a[href]")).map(a => a.getAttribute("href"));
  // A table wider than its box hides columns behind a scrollbar; a page wider than the window
  // hides whatever sticks out.
  const hidden_tables = Array.from(document.querySelectorAll("table")).filter(table =>
    table.parentElement.scrollWidth > table.parentElement.clientWidth + 1 ||
    table.getBoundingClientRect().right > window.innerWidth + 1).map(table =>
    Array.from(table.querySelectorAll("th")).map(th => th.textContent).join(" | "));
  const widths = {page: document.documentElement.scrollWidth, window: window.innerWidth};
  const out = document.createElement("pre");
  out.id = "flowerlab-probe";
  out.textContent = JSON.stringify({images, links, hidden_tables, widths, title: document.title});
  document.body.appendChild(out);
});
</script>
"""


def run_chromium(browser: Path, profile: Path, *arguments: str) -> subprocess.CompletedProcess:
    """Chromium with a fresh profile, as root in a container, nothing fetched in the background."""
    return subprocess.run(
        [str(browser), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *arguments],
        capture_output=True,
        text=True,
        timeout=CHROMIUM_TIMEOUT_S,
        check=False,
    )


def probe_page(browser: Path, page: Path, profile: Path) -> dict:
    """What the browser saw on `page`: its images' load state and its links."""
    probe = page.with_name(f".probe-{page.name}")
    text = page.read_text(encoding="utf-8")
    probe.write_text(
        text.replace("</body>", PROBE + "</body>") if "</body>" in text else text + PROBE, encoding="utf-8"
    )
    try:
        done = run_chromium(
            browser, profile, f"--window-size={WINDOW}", f"--virtual-time-budget={LOAD_BUDGET_MS}", "--dump-dom",
            probe.as_uri()
        )
    finally:
        probe.unlink()
    match = re.search(r'<pre id="flowerlab-probe">(.*?)</pre>', done.stdout, re.DOTALL)
    assert match, (
        f"the page did not finish loading in Chromium (exit {done.returncode}): {done.stderr[-2000:]}"
    )
    return json.loads(html.unescape(match.group(1)))


def broken_links(page: Path, links: list[str]) -> list[str]:
    broken = []
    for href in links:
        parts = urlsplit(href)
        if parts.scheme in {"http", "https"}:
            broken.append(f"{href} (a network link in an offline report)")
        elif not parts.scheme and parts.path and not (page.parent / unquote(parts.path)).exists():
            broken.append(href)
    return broken


def screenshot(browser: Path, page: Path, out: Path, profile: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    done = run_chromium(
        browser,
        profile,
        f"--window-size={WINDOW}",
        f"--virtual-time-budget={LOAD_BUDGET_MS}",
        f"--screenshot={out}",
        page.as_uri(),
    )
    assert out.is_file() and out.stat().st_size > 10_000, f"no screenshot: {done.stderr[-2000:]}"


def assert_page_loads_in_the_browser(browser: Path, page: Path, tmp_path: Path) -> dict:
    seen = probe_page(browser, page, tmp_path / "profile-probe")
    assert seen["images"], "the page shows no image"
    not_loaded = [image for image in seen["images"] if not (image["complete"] and image["naturalWidth"] > 0)]
    assert not not_loaded, f"images that did not load: {not_loaded}"
    assert broken_links(page, seen["links"]) == []
    return seen


def assert_nothing_hidden_at_laptop_width(seen: dict) -> None:
    """At the probe's window width (WINDOW), every table shows all its columns and nothing sticks
    out of the page."""
    assert seen["hidden_tables"] == [], f"tables with columns hidden at {WINDOW.split(',')[0]} px: {seen['hidden_tables']}"
    assert seen["widths"]["page"] <= seen["widths"]["window"], f"the page is wider than the window: {seen['widths']}"
