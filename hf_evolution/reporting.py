"""How results look: Markdown tables, family colours, PNG figures (files only, no display needed)."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: runs happen on servers without a display
import matplotlib.pyplot as plt  # noqa: E402


def format_value(value) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "n/a"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return "n/a" if value is None else str(value)


def markdown_table(rows: list[dict], columns: dict[str, str]) -> str:
    """A Markdown table of `rows` with `columns` mapping row keys to headers; readable in a terminal too."""
    header = "| " + " | ".join(columns.values()) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(format_value(row.get(key)) for key in columns) + " |" for row in rows]
    return "\n".join([header, rule, *body])


def save_figure(figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def new_figure(width: float = 7.0, height: float = 4.5, **subplots):
    """A figure and its axes; `subplots` go to `plt.subplots` (e.g. `ncols=2, squeeze=False` for several panels)."""
    return plt.subplots(figsize=(width, height), **subplots)


def plot_confusion_matrix(matrix, labels: list[str], path: str | os.PathLike, title: str) -> Path:
    """Rows are true labels, columns predictions; each cell shows its count (scikit-learn's ConfusionMatrixDisplay)."""
    import numpy as np
    from sklearn.metrics import ConfusionMatrixDisplay

    figure, axes = new_figure(1.2 * len(labels) + 2.5, 1.0 * len(labels) + 2.0)
    ConfusionMatrixDisplay(np.asarray(matrix), display_labels=labels).plot(ax=axes, cmap="Blues", xticks_rotation=45)
    axes.set(xlabel="predicted", ylabel="true", title=title)
    return save_figure(figure, path)
