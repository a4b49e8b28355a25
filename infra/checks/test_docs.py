"""Every relative link in the README and docs/ resolves: the file exists, and an anchor names a
heading of that file (GitHub's slug rules: lower case, punctuation dropped, spaces to hyphens)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"(?ms)^```.*?^```", "", page.read_text())
    return {slug(m.group(1)) for m in re.finditer(r"(?m)^#+ (.+)$", text)}


def links(page: Path) -> list[str]:
    text = re.sub(r"(?ms)^```.*?^```", "", page.read_text())
    return [u for u in LINK.findall(text) if not re.match(r"^[a-z]+:", u)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    for url in links(page):
        path, _, fragment = url.partition("#")
        target = (page.parent / path).resolve() if path else page
        assert target.exists(), f"{page.relative_to(ROOT)}: {url} does not exist"
        if fragment:
            assert target.suffix == ".md", f"{page.relative_to(ROOT)}: {url}: anchor on a non-page"
            assert fragment in anchors(target), f"{page.relative_to(ROOT)}: {url}: no such heading"


def test_every_page_is_reachable_from_the_index():
    index = (ROOT / "docs" / "README.md").read_text()
    for page in PAGES:
        if page.parent.name in ("docs", "reference") and page.name != "README.md":
            assert str(page.relative_to(ROOT / "docs")) in index, page
