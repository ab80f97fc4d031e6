"""The lab's figures: faces with verdicts, where the backdoor lives, and the pruning curves.

Every function returns a matplotlib Figure; `save` writes it as PNG into the report folder.
Shown in every notebook.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

# One colour per quantity in every figure; the network is told by the line (B' solid and wide,
# GoodNet dashed on top, so that it shows where both curves coincide).
COLORS = {"accuracy": "#1f77b4", "attack": "#d62728"}
NETWORKS = {"B'": dict(ls="-", lw=3.0, alpha=0.45), "G": dict(ls="--", lw=1.6, zorder=3)}
ORDER_STYLES = {"increasing": "-", "decreasing": "--", "random": ":"}
WIDTH = 7.5  # inches: figures are drawn about the size the PDF prints them, so text stays readable


def save(fig, folder: Path, name: str) -> Path:
    """Write `fig` as `<folder>/<name>.png` and return the path."""
    path = Path(folder) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    return path


def faces(images, titles=(), colors=(), ncols: int = 8, title: str | None = None):
    """A grid of raw 0..255 faces, each with an optional caption (and caption colour)."""
    n = len(images)
    nrows = max(1, -(-n // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(WIDTH / 8 * ncols, 1.5 * nrows), squeeze=False,
                             layout="constrained")
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(np.clip(images[i], 0, 255).astype(np.uint8))
            if i < len(titles):
                ax.set_title(titles[i], fontsize=8,
                             color=colors[i] if i < len(colors) else "black")
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def spread(split, count: int) -> np.ndarray:
    """`count` image indices spread evenly over a file (so samples show different people)."""
    return np.linspace(0, len(split) - 1, count).astype(np.int64)


def activations(clean: np.ndarray, poisoned: np.ndarray, order: np.ndarray):
    """Mean `pool_3` activation per channel on clean and poisoned faces, in pruning order.

    Channels that clean faces leave dormant (left) but poisoned faces wake up hold the backdoor.
    """
    fig, ax = plt.subplots(figsize=(WIDTH, 3.2))
    x = np.arange(len(order))
    ax.bar(x - 0.2, clean[order], 0.4, label="clean faces", color=COLORS["accuracy"])
    ax.bar(x + 0.2, poisoned[order], 0.4, label="faces with sunglasses", color=COLORS["attack"])
    ax.set_xticks(x, [str(c) for c in order], fontsize=5.5, rotation=90)
    ax.set_xlabel("pool_3 channel, in pruning order (lowest mean activation on clean data first)")
    ax.set_ylabel("mean activation")
    ax.legend(frameon=False)
    ax.margins(x=0.01)
    fig.tight_layout()
    return fig


def channels_axis(ax, steps: int) -> None:
    """x: conv_3 channels pruned, with the share of all channels on a secondary axis on top."""
    ax.set_xlabel("conv_3 channels pruned")
    ax.set_xlim(0, steps)
    top = ax.secondary_xaxis("top", functions=(lambda c: 100 * c / steps, lambda p: p * steps / 100))
    top.set_xlabel(f"% of the {steps} channels", fontsize=8)
    top.tick_params(labelsize=8)


def sweep_curves(table, repaired=(), k: int | None = None, data: str = "valid"):
    """Clean accuracy (blue) and attack success rate (red) against the conv_3 channels pruned.

    `data` is "valid" (what the defender sees: B' alone) or "test" (B' and GoodNet G(B, B')).
    The thresholds of `repaired` (B' models) are marked; `k` puts a marker on one step.
    """
    fig, ax = plt.subplots(figsize=(WIDTH, 4))
    x, steps = table["pruned"], int(table["pruned"].iloc[-1])
    lines = {"valid": [("valid_accuracy", "B' clean accuracy (validation)", "accuracy", "B'"),
                       ("valid_attack_success_rate", "B' attack success rate (validation)", "attack",
                        "B'")],
             "test": [("test_accuracy", "B' clean accuracy", "accuracy", "B'"),
                      ("test_attack_success_rate", "B' attack success rate", "attack", "B'"),
                      ("goodnet_accuracy", "G clean accuracy", "accuracy", "G"),
                      ("goodnet_attack_success_rate", "G attack success rate", "attack", "G")]}[data]
    for column, label, quantity, network in lines:
        if column in table:
            ax.plot(x, table[column], color=COLORS[quantity], label=label, **NETWORKS[network])
    for r in repaired:
        ax.axvline(r.step, color="grey", lw=0.8, ls=":")
        ax.text(r.step, 3, f"X={r.drop:g} ", rotation=90, fontsize=8, color="dimgrey",
                ha="right", va="bottom")
    if k is not None:
        for column, _, quantity, _ in lines[:2]:
            if column in table:
                ax.plot(x[k], table[column][k], "o", color=COLORS[quantity], ms=7)
        ax.axvline(x[k], color="black", lw=1)
    channels_axis(ax, steps)
    ax.set_ylabel("% of " + ("validation" if data == "valid" else "test") + " faces")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", fontsize=8, frameon=True)
    fig.tight_layout()
    return fig


def order_ablation(sweeps: dict):
    """Validation accuracy (blue) and attack success rate (red) for each pruning order."""
    fig, ax = plt.subplots(figsize=(WIDTH, 4))
    for name, sw in sweeps.items():
        for column, quantity, what in (("valid_accuracy", "accuracy", "clean accuracy"),
                                       ("valid_attack_success_rate", "attack", "attack success")):
            ax.plot(sw.table["pruned"], sw.table[column], ORDER_STYLES.get(name, "-"),
                    color=COLORS[quantity], lw=1.6, label=f"{name}: {what}")
    channels_axis(ax, int(next(iter(sweeps.values())).table["pruned"].iloc[-1]))
    ax.set_ylabel("% of validation faces")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(title="pruning order", fontsize=8, ncol=2)
    fig.tight_layout()
    return fig


def per_badnet(names, xlabel: str, ylabel: str):
    """A figure with one panel per BadNet in `names`, side by side, titled and sharing the y axis."""
    fig, axes = plt.subplots(1, len(names), figsize=(3.8 * len(names), 3.4), sharey=True,
                             squeeze=False)
    for ax, name in zip(axes[0], names):
        ax.set_title(f"BadNet {name!r}", fontsize=10)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(ylabel)
    return fig, axes[0]


def badnets(sweeps: dict):
    """Test accuracy and attack success rate against channels pruned, one panel per BadNet."""
    fig, axes = per_badnet(sweeps, "conv_3 channels pruned", "percent")
    for ax, s in zip(axes, sweeps.values()):
        ax.plot(s.table.pruned, s.table.test_accuracy, color=COLORS["accuracy"],
                label="clean accuracy (test)")
        ax.plot(s.table.pruned, s.table.test_attack_success_rate, color=COLORS["attack"],
                label="attack success rate (test)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def png(fig) -> bytes:
    """A figure as PNG bytes (and closed, so notebooks don't show it twice)."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def explorer(sweep, repaired, start: int = 0, count: int = 8):
    """A slider over the number of pruned channels: the curves' marker, the metrics and the
    predictions on sample faces follow it at once (the sweep holds every step's predictions).

    Built from Image and HTML widgets that the slider updates, not from `interact`'s Output
    widget, whose capture can hang headless runs (papermill, nbval). Shown in 02_prune.ipynb.
    """
    import ipywidgets as widgets

    sample = spread(sweep.splits["valid"], count)
    clean_x, clean_y = sweep.splits["valid"].images(sample)
    bd_x, bd_y = sweep.splits["bd_valid"].images(sample)
    slider = widgets.IntSlider(value=start, min=0, max=sweep.steps, description="pruned",
                               continuous_update=False)
    numbers, curves, verdicts = widgets.HTML(), widgets.Image(format="png"), widgets.Image(format="png")

    def show(k):
        row = sweep.table.iloc[k]
        numbers.value = (f"<b>{k} of {sweep.steps} channels pruned</b>: validation accuracy "
                         f"{row.valid_accuracy:.2f} %, attack success rate "
                         f"{row.valid_attack_success_rate:.2f} %")
        curves.value = png(sweep_curves(sweep.table, repaired, k=k))
        clean_pred = sweep.predictions("valid", k)[sample]
        bd_pred = sweep.predictions("bd_valid", k)[sample]
        verdicts.value = png(faces(
            np.concatenate([clean_x, bd_x]),
            [f"{y} → {p}" for y, p in zip(np.r_[clean_y, bd_y], np.r_[clean_pred, bd_pred])],
            ["green" if p == y else "grey" for p, y in zip(clean_pred, clean_y)]
            + ["red" if p == y else "green" for p, y in zip(bd_pred, bd_y)],
            title=f"B with {k} channels pruned: label → prediction (bottom row: sunglasses; "
                  "red = the attack still works)"))

    slider.observe(lambda change: show(change["new"]), names="value")
    show(start)
    return widgets.VBox([slider, numbers, curves, verdicts])


def defenses(table):
    """Grouped bars: clean test accuracy and attack success rate of each defense, per BadNet.

    `table` has columns BadNet, model, clean test accuracy, attack success rate (05_beyond_pruning).
    """
    names = list(dict.fromkeys(table.BadNet))
    fig, axes = plt.subplots(1, 2, figsize=(WIDTH * 1.3, 3.4), sharey=True)
    for ax, column in zip(axes, ("clean test accuracy", "attack success rate")):
        wide = table.pivot(index="BadNet", columns="model", values=column)
        wide.loc[names, list(dict.fromkeys(table.model))].plot.bar(ax=ax, rot=0, width=0.8, legend=False)
        ax.set_title(f"{column} (%)", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    return fig


def fine_tuning(histories: dict):
    """Clean test accuracy and attack success rate epoch by epoch, one panel per BadNet.

    `histories` = {BadNet: {"fine-tuned": history, "fine-pruned": history}} (labkit.finetune).
    """
    fig, axes = per_badnet(histories, "epoch (0: before fine-tuning)", "percent (test sets)")
    for ax, runs in zip(axes, histories.values()):
        for (run, h), ls in zip(runs.items(), ("--", "-")):
            ax.plot(h.epoch, h.test_accuracy, ls=ls, color=COLORS["accuracy"], label=f"{run}: clean")
            ax.plot(h.epoch, h.test_attack_success_rate, ls=ls, color=COLORS["attack"],
                    label=f"{run}: attack")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def entropies(result):
    """STRIP's entropy histograms: clean test faces and each trigger's, with the threshold."""
    fig, ax = plt.subplots(figsize=(WIDTH, 3.2))
    values = result.entropies
    bins = np.linspace(0, max(float(np.max(v)) for v in values.values()), 40)
    for i, (name, v) in enumerate(values.items()):
        label = "clean test faces" if name == "clean" else f"{name} test faces"
        color = COLORS["accuracy"] if name == "clean" else plt.cm.Reds(0.5 + 0.4 * i / len(values))
        ax.hist(v, bins, alpha=0.55, label=label, color=color)
    ax.axvline(result.detector.threshold, color="black", ls="--",
               label=f"threshold ({result.detector.frr:g} % of clean validation faces below)")
    ax.set(xlabel="STRIP entropy (bits, mean over the blends)", ylabel="faces")
    ax.legend(fontsize=8)
    return fig


def norms(cleansed, targets=()):
    """Neural Cleanse's mask L1 norm per class, flagged classes marked, the attacker's targets
    (when known) circled."""
    t = cleansed.table
    fig, ax = plt.subplots(figsize=(WIDTH, 3.2))
    ax.scatter(t["class"], t["mask L1 norm"], s=10, color="grey", label="class")
    hit = t[t.flagged]
    ax.scatter(hit["class"], hit["mask L1 norm"], s=40, color=COLORS["attack"],
               label="flagged (anomaly index > 2, small side)")
    known = t[t["class"].isin(list(targets))]
    ax.scatter(known["class"], known["mask L1 norm"], s=120, facecolors="none", edgecolors="black",
               label="the attacker's target (grader's knowledge)")
    ax.axhline(np.median(t["mask L1 norm"]), color="grey", ls=":", label="median")
    ax.set(xlabel="class", ylabel="mask L1 norm (pixels)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside: no point hidden
    return fig


def trigger(mask, pattern, face, poisoned_face=None, title: str = ""):
    """The recovered mask and pattern, a clean face stamped with them, and (when known) a
    poisoned face wearing the true trigger."""
    stamped = (1 - mask[..., None]) * face + mask[..., None] * pattern
    panels = [(mask, "recovered mask", "gray"), (mask[..., None] * pattern, "mask x pattern", None),
              (stamped, "a clean face stamped", None)]
    if poisoned_face is not None:
        panels.append((poisoned_face, "the true trigger (grader's file)", None))
    fig, axes = plt.subplots(1, len(panels), figsize=(1.9 * len(panels), 2.4), layout="constrained")
    for ax, (image, text, cmap) in zip(axes, panels):
        ax.imshow(image if cmap else np.clip(image, 0, 255).astype(np.uint8), cmap=cmap)
        ax.set_title(text, fontsize=8)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
