"""Relative links in README.md and docs/ point at files that exist and at headings they have;
the README links every guide and both generated references."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PAGES = sorted([REPO / "README.md", *REPO.glob("docs/*.md"), *REPO.glob("docs/reference/*.md")])
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)
CODE = re.compile(r"`[^`\n]*`")


def prose(page: Path) -> str:
    """The page without code blocks and code spans (which hold no links)."""
    return CODE.sub("", FENCE.sub("", page.read_text()))


def slugs(page: Path) -> set[str]:
    """GitHub's heading anchors of a page."""
    out: set[str] = set()
    for heading in re.findall(r"^#{1,6} (.+)$", FENCE.sub("", page.read_text()), re.M):
        base = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        slug, n = base, 0
        while slug in out:
            n += 1
            slug = f"{base}-{n}"
        out.add(slug)
    return out


def test_slugs_follow_github() -> None:
    page = REPO / "docs" / "format.md"
    assert "targettargetjson-the-targets-policy" in slugs(page)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in LINK.findall(prose(page)):
        if re.match(r"^[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target} (no file)")
        elif anchor and dest.suffix == ".md" and anchor not in slugs(dest):
            broken.append(f"{target} (no heading #{anchor})")
    assert not broken, f"{page.relative_to(REPO)}: broken links {broken}"


def test_readme_links_every_guide() -> None:
    readme = (REPO / "README.md").read_text()
    for page in ("quickstart", "troubleshooting", "security", "format", "cli", "storage",
                 "operator", "chart", "testing", "reference/crds", "reference/cli"):
        assert f"](docs/{page}.md" in readme, f"README.md does not link docs/{page}.md"
