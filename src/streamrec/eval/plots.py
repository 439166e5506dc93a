"""PNG plots of the experiments (matplotlib, headless Agg backend)."""

from __future__ import annotations

from pathlib import Path

from streamrec.eval.experiments import Result


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_collisions(results: list[Result], out_dir: Path) -> list[Path]:
    """One PNG per data set: test AUC per epoch, a line per variant."""
    plt = _pyplot()
    paths = []
    from matplotlib.ticker import MaxNLocator

    for name in sorted({r.dataset for r in results if r.experiment == "collisions"}):
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        rs = [r for r in results if r.experiment == "collisions" and r.dataset == name]
        for variant in dict.fromkeys(r.variant for r in rs):
            points = sorted((r.epoch, r.value) for r in rs if r.variant == variant)
            width = 2.5 if variant == "collisionless" else 1.5
            ax.plot(*zip(*points, strict=True), marker="o", label=variant, linewidth=width)
        ax.set(title=f"{name}: collisionless vs modulo-hashed tables", xlabel="epoch", ylabel="test AUC")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
        path = out_dir / f"collisions-{name}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def plot_online(results: list[Result], out_dir: Path) -> list[Path]:
    """One PNG per data set: progressive AUC per sync interval."""
    plt = _pyplot()
    paths = []
    for name in sorted({r.dataset for r in results if r.experiment == "online"}):
        rs = [r for r in results if r.experiment == "online" and r.dataset == name]
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        bars = ax.bar([r.variant for r in rs], [r.value for r in rs], color=["#999"] + ["#3a7"] * (len(rs) - 1))
        ax.bar_label(bars, fmt="%.4f", fontsize=8)
        low = min(r.value for r in rs)
        ax.set_ylim(low - 0.02, max(r.value for r in rs) + 0.01)
        ax.set(title=f"{name}: progressive AUC of the serving model by sync interval", ylabel="progressive AUC")
        ax.grid(alpha=0.3, axis="y")
        path = out_dir / f"online-{name}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths
