"""Training metrics: one CSV row per optimizer step / validation, and a loss + mIoU plot.

`metrics.csv` is appended to (a resumed run continues it); `metrics.png` is redrawn from the
whole CSV with matplotlib's Agg backend (no display needed).
"""
from __future__ import annotations

import csv
from pathlib import Path

COLUMNS = ("split", "step", "epoch", "lr", "loss", "loss_mask", "loss_dice", "loss_iou", "loss_class",
           "loss_contrastive", "miou", "fscore", "JF", "seconds")
CSV_NAME, PLOT_NAME = "metrics.csv", "metrics.png"
SMOOTHING = 0.9  # exponential moving average of the plotted training losses


class MetricsLog:
    """Appends rows to ``<folder>/metrics.csv`` and plots them to ``<folder>/metrics.png``."""

    def __init__(self, folder: str | Path) -> None:
        self.path = Path(folder) / CSV_NAME
        self.plot_path = Path(folder) / PLOT_NAME
        if not self.path.is_file():
            with self.path.open("w", newline="") as handle:
                csv.writer(handle).writerow(COLUMNS)

    def add(self, **row: object) -> None:
        unknown = set(row) - set(COLUMNS)
        if unknown:
            raise ValueError(f"unknown metrics {sorted(unknown)}")
        with self.path.open("a", newline="") as handle:
            csv.writer(handle).writerow([_cell(row.get(c)) for c in COLUMNS])

    def rows(self) -> list[dict[str, str]]:
        with self.path.open(newline="") as handle:
            return list(csv.DictReader(handle))

    def plot(self) -> Path:
        """Training loss (total and contrastive, smoothed) and validation mIoU / F-score vs step."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = self.rows()
        train = [r for r in rows if r["split"] == "train" and r["loss"]]
        val = [r for r in rows if r["split"] == "val" and r["miou"]]
        fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(10, 4))
        for key, label in (("loss", "total"), ("loss_contrastive", "contrastive")):
            steps = [int(r["step"]) for r in train]
            ax_loss.plot(steps, _smooth([float(r[key]) for r in train]), label=label)
        ax_loss.set(xlabel="step", ylabel="loss", title="training loss (EMA)")
        ax_loss.legend()
        for key in ("miou", "fscore"):
            ax_val.plot([int(r["step"]) for r in val], [float(r[key]) for r in val], marker="o", label=key)
        ax_val.set(xlabel="step", ylabel="score", title="validation", ylim=(0, 1))
        ax_val.legend()
        fig.tight_layout()
        fig.savefig(self.plot_path, dpi=100)
        plt.close(fig)
        return self.plot_path


def _cell(value: object) -> str:
    if value is None:
        return ""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _smooth(values: list[float]) -> list[float]:
    out, level = [], None
    for value in values:
        level = value if level is None else SMOOTHING * level + (1 - SMOOTHING) * value
        out.append(level)
    return out
