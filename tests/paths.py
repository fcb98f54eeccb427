"""Where the tests find data: the shared sample data beside the checkout (never copied into the project).

``../shared/datasets`` holds real alignments, structures and promoter sets taken from public repositories
(provenance in its SOURCES.md files). CI and every development machine have it beside the checkout; where it
is absent, the tests that need it are skipped with the reason below. Everything else runs on data the tests
or ``msaformer demo`` make.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets"
MSA = SHARED / "msa"
PROMOTER = SHARED / "promoter"
STRUCTURES = SHARED / "structures"

needs_shared = pytest.mark.skipif(
    not (MSA / "expected.tsv").is_file(),
    reason=f"the shared sample data is not at {SHARED} (it lives beside the checkout, ../shared/datasets)",
)
