"""What the problems' pictures share: matplotlib without a display, and the way a finished figure is written."""

from __future__ import annotations


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend (needs matplotlib:
    ``pip install "pyneuralode[plot]"``)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, path, *, title: str, dpi: int) -> None:
    """Give ``fig`` the overall ``title``, lay it out tightly, write it to ``path`` at ``dpi`` and close it."""
    import matplotlib.pyplot as plt
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
