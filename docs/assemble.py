"""Builds README.md and BENCHMARKS.md from their parts in docs/ (run from the repository root)."""

from pathlib import Path

DOCS = Path("docs")
SECTIONS = ["parser", "shards", "model", "training", "inference", "promoter"]


def build(head: str, names: list[str], tail: str | None, out: str) -> None:
    parts = [(DOCS / head).read_text().rstrip()]
    parts += [(DOCS / "fragments" / f"{name}.md").read_text().rstrip() for name in names]
    if tail:
        parts.append((DOCS / tail).read_text().rstrip())
    Path(out).write_text("\n\n".join(parts) + "\n")


build("readme_head.md", SECTIONS, "readme_tail.md", "README.md")
build("bench_head.md", [f"bench-{name}" for name in SECTIONS], None, "BENCHMARKS.md")
