"""The study's curves: held-out eval loss against cumulative bytes, forward-equivalents and round."""
from __future__ import annotations

from pathlib import Path

import numpy as np

AXES = (("bytes", "cumulative bytes, all clients (up + down)", True),
        ("fe", "cumulative client forward-equivalents", False),
        ("round", "round", False))


def loss_axis_top(curves: list[np.ndarray]) -> float:
    """The loss axis ends a tenth above the highest starting loss, so that a diverged run does not flatten the rest."""
    return 1.1 * max(float(c[0]) for c in curves)


def loss_curves(curves: dict[str, list[dict[str, np.ndarray]]], labels: dict[str, str], title: str,
                stem: Path) -> list[Path]:
    """One figure per x axis (stem_bytes.png, stem_fe.png, stem_round.png): a line per method, the mean over its
    seeds' trajectories ("loss" and one array per axis), with the seeds' min-max band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stem.parent.mkdir(parents=True, exist_ok=True)
    top = loss_axis_top([t["loss"] for trajs in curves.values() for t in trajs])
    paths = []
    for x, axis_label, log in AXES:
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for method, trajs in curves.items():
            xs = np.mean([t[x] for t in trajs], axis=0)
            losses = np.array([t["loss"] for t in trajs])
            xs = np.where(xs > 0, xs, 1.0) if log else xs
            mean = losses.mean(axis=0)
            off = " – diverged, leaves the plot" if mean.max() > top else ""
            ax.plot(xs, mean, marker=".", label=labels[method] + off)
            ax.fill_between(xs, losses.min(axis=0), losses.max(axis=0), alpha=0.2)
        ax.set_ylim(top=top)
        if log:
            ax.set_xscale("log")
        ax.set_xlabel(axis_label + (" (round 0 drawn at 1)" if log else ""))
        ax.set_ylabel("held-out eval loss")
        ax.set_title(title)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = stem.parent / f"{stem.name}_{x}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths
