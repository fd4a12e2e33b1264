"""Checks shared by the report tests: every image and link of an HTML page resolves offline."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit


class _References(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.links: list[str] = []
        self.external: list[str] = []  # scripts, stylesheets, frames loaded by the page

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "img":
            self.images.append(values.get("src") or "")
        elif tag == "a" and values.get("href"):
            self.links.append(values["href"])
        elif tag in {"script", "iframe"} and values.get("src"):
            self.external.append(values["src"])
        elif tag == "link" and values.get("href"):
            self.external.append(values["href"])


def references(page: Path) -> _References:
    parser = _References()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


def local_target(page: Path, reference: str) -> Path | None:
    """The file a relative reference points to, or None for data:, #fragment and web URLs."""
    parts = urlsplit(reference)
    if parts.scheme in {"data", "http", "https", "mailto"} or not parts.path:
        return None
    return (page.parent / unquote(parts.path)).resolve()


def broken_references(page: Path) -> list[str]:
    """Images that are not data: URIs or existing files, links to missing files, remote loads."""
    found = references(page)
    problems = []
    for src in found.images:
        target = local_target(page, src)
        if not src.startswith("data:image/") and (target is None or not target.is_file()):
            problems.append(f"image {src[:80]!r} does not resolve")
    for href in found.links:
        target = local_target(page, href)
        if urlsplit(href).scheme in {"http", "https"}:
            problems.append(f"link to the network: {href}")
        elif target is not None and not target.exists():
            problems.append(f"link {href!r} -> {target} does not exist")
    # The page must stand alone: styles inline, no script, stylesheet or frame loaded from elsewhere.
    problems += [
        f"loads an external resource: {src}" for src in found.external if not src.startswith("data:")
    ]
    return problems
