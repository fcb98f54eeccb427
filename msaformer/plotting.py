"""matplotlib without a display, and figures saved atomically: the one place plots are set up and written."""

from __future__ import annotations

import os
from pathlib import Path


def pyplot():
    """Returns ``matplotlib.pyplot`` on the non-interactive Agg backend (no display needed)."""
    import matplotlib

    if matplotlib.get_backend().lower() != "agg":
        matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | os.PathLike, **kwargs) -> Path:
    """Writes ``fig`` as a PNG to ``path`` atomically, closes it, and returns the path."""
    from msaformer.files import atomic_path

    plt = pyplot()
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", **kwargs)
    finally:
        plt.close(fig)
    return path
