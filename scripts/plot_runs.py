"""Plot runs side by side: Rouge-L and eval loss against round, and cumulative bytes against round.

    python scripts/plot_runs.py RUN_DIR [RUN_DIR ...] [--out runs.png]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from run_records import read_metrics  # noqa: E402


def run_label(run_dir: Path) -> str:
    """The run's method (FedKSeed / FedKSeed-Pro), dataset and seed, from its config.json."""
    try:
        flags = json.loads((run_dir / "config.json").read_text())["flags"]
    except (OSError, ValueError, KeyError):
        return run_dir.name
    method = "FedKSeed-Pro" if flags.get("bias_sampling") else "FedKSeed"
    return f"{method} {flags.get('dataset')} seed {flags.get('seed')} ({run_dir.name})"


def series(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    points = [(r["round"], r[key]) for r in rows if key in r]
    return [p[0] for p in points], [p[1] for p in points]


def build_figure(run_dirs: list[Path]):
    """Three panels, one line per run in each."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for run_dir in run_dirs:
        rows = read_metrics(run_dir / "metrics.jsonl")
        label = run_label(run_dir)
        axes[0].plot(*series(rows, "rouge_l"), marker="o", label=label)
        axes[1].plot(*series(rows, "eval_loss"), marker=".", label=label)
        rounds = [r["round"] for r in rows]
        per_round = [r.get("bytes_up_per_client", 0) + r.get("bytes_down_per_client", 0) for r in rows]
        cumulative = [sum(per_round[: i + 1]) / 1024 for i in range(len(per_round))]
        axes[2].plot(rounds, cumulative, label=label)
    labels = [("Rouge-L", "Rouge-L on held-out data"), ("eval loss", "Eval loss on held-out data"),
              ("KiB per client (up + down), cumulative", "Communication")]
    for ax, (ylabel, title) in zip(axes, labels, strict=True):
        ax.set_xlabel("round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot(run_dirs: list[Path], out: Path) -> Path:
    fig = build_figure(run_dirs)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="run directories (each with metrics.jsonl)")
    parser.add_argument("--out", type=Path, default=Path("runs.png"), help="PNG file to write")
    args = parser.parse_args(argv)
    missing = [str(r) for r in args.runs if not (r / "metrics.jsonl").is_file()]
    if missing:
        print(f"error: no metrics.jsonl in {', '.join(missing)}", file=sys.stderr)
        return 2
    print(plot(args.runs, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
