"""Builds README.md and BENCHMARKS.md from their parts in docs/ (run from the repository root)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SECTIONS = ["parser", "shards", "model", "training", "inference", "promoter"]


def render(head: str, names: list[str], tail: str | None) -> str:
    """Returns the document made of ``head``, the named fragments and ``tail``."""
    parts = [(DOCS / head).read_text().rstrip()]
    parts += [(DOCS / "fragments" / f"{name}.md").read_text().rstrip() for name in names]
    if tail:
        parts.append((DOCS / tail).read_text().rstrip())
    return "\n\n".join(parts) + "\n"


def documents() -> dict[str, str]:
    """Returns ``{file name: text}`` of the assembled documents."""
    return {
        "README.md": render("readme_head.md", SECTIONS, "readme_tail.md"),
        "BENCHMARKS.md": render("bench_head.md", [f"bench-{name}" for name in SECTIONS], None),
    }


if __name__ == "__main__":
    for name, text in documents().items():
        (ROOT / name).write_text(text)
