"""The lab's figures: faces with verdicts, where the backdoor lives, and the pruning curves.

Every function returns a matplotlib Figure; `save` writes it as PNG into the report folder.
Shown in every notebook.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from .metrics import by_trigger

# One colour per quantity in every figure; the network is told by the line (B' solid and wide,
# GoodNet dashed on top, so that it shows where both curves coincide).
COLORS = {"accuracy": "#1f77b4", "attack": "#d62728"}
NETWORKS = {"B'": dict(ls="-", lw=3.0, alpha=0.45), "G": dict(ls="--", lw=1.6, zorder=3)}
ORDER_STYLES = {"increasing": "-", "decreasing": "--", "random": ":"}
# with several triggers, one shade of the attack's colour per trigger (the first is the attack's)
TRIGGER_COLORS = ["#d62728", "#ff7f0e", "#8c2d9c", "#8c564b"]
WIDTH = 7.5  # inches: figures are drawn about the size the PDF prints them, so text stays readable


def attack_curves(columns, column: str, label: str) -> list:
    """[(column name, label, colour)] of the attack `column` per trigger (`metrics.by_trigger`):
    one line for one trigger, one per trigger for several, none where the trigger is unknown."""
    return [(c, f"{label} ({t})" if t else label, TRIGGER_COLORS[i % len(TRIGGER_COLORS)])
            for i, (t, c) in enumerate(by_trigger(list(columns), column).items())]


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


def activations(clean: np.ndarray, poisoned: dict, order: np.ndarray):
    """Mean `pool_3` activation per channel on clean and poisoned faces, in pruning order.

    `poisoned` = {trigger: means} ({} where the trigger is unknown). Channels that clean faces
    leave dormant (left) but poisoned faces wake up hold the backdoor.
    """
    fig, ax = plt.subplots(figsize=(WIDTH, 3.2))
    x, width = np.arange(len(order)), 0.8 / (1 + len(poisoned))
    ax.bar(x - 0.4 + width / 2, clean[order], width, label="clean faces", color=COLORS["accuracy"])
    for i, (trigger, means) in enumerate(poisoned.items()):
        ax.bar(x - 0.4 + width * (i + 1.5), means[order], width, label=f"faces with {trigger}",
               color=TRIGGER_COLORS[i % len(TRIGGER_COLORS)])
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
    # an attack line per trigger: one for one trigger, several for several, none if it is unknown
    lines = [(c, lab, color, network) for column, label, quantity, network in lines
             for c, lab, color in ([(column, label, COLORS[quantity])] if quantity == "accuracy"
                                   else attack_curves(table.columns, column, label))]
    for column, label, color, network in lines:
        if column in table:
            ax.plot(x, table[column], color=color, label=label, **NETWORKS[network])
    for r in repaired:
        ax.axvline(r.step, color="grey", lw=0.8, ls=":")
        ax.text(r.step, 3, f"X={r.drop:g} ", rotation=90, fontsize=8, color="dimgrey",
                ha="right", va="bottom")
    if k is not None:
        for column, _, color, network in lines:
            if column in table and network == "B'":
                ax.plot(x[k], table[column][k], "o", color=color, ms=7)
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
        lines = [("valid_accuracy", "clean accuracy", COLORS["accuracy"]),
                 *attack_curves(sw.table.columns, "valid_attack_success_rate", "attack success")]
        for column, what, color in lines:
            ax.plot(sw.table["pruned"], sw.table[column], ORDER_STYLES.get(name, "-"),
                    color=color, lw=1.6, label=f"{name}: {what}")
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
        for column, label, color in attack_curves(s.table.columns, "test_attack_success_rate",
                                                  "attack success rate (test)"):
            ax.plot(s.table.pruned, s.table[column], color=color, label=label)
        ax.legend(fontsize=7)
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
    poisoned = [n for n in sweep.splits if n.startswith("bd_valid")][:1]  # the first trigger's
    bd_x, bd_y = sweep.splits[poisoned[0]].images(sample) if poisoned else (clean_x[:0], clean_y[:0])
    slider = widgets.IntSlider(value=start, min=0, max=sweep.steps, description="pruned",
                               continuous_update=False)
    numbers, curves, verdicts = widgets.HTML(), widgets.Image(format="png"), widgets.Image(format="png")

    def show(k):
        row = sweep.table.iloc[k]
        numbers.value = (f"<b>{k} of {sweep.steps} channels pruned</b>: validation accuracy "
                         f"{row.valid_accuracy:.2f} %" + "".join(
                             f", attack success rate{f' ({t})' if t else ''} {row[c]:.2f} %"
                             for t, c in by_trigger(sweep.table.columns, "valid_attack_success_rate").items()))
        curves.value = png(sweep_curves(sweep.table, repaired, k=k))
        clean_pred = sweep.predictions("valid", k)[sample]
        bd_pred = sweep.predictions(poisoned[0], k)[sample] if poisoned else clean_pred[:0]
        verdicts.value = png(faces(
            np.concatenate([clean_x, bd_x]),
            [f"{y} → {p}" for y, p in zip(np.r_[clean_y, bd_y], np.r_[clean_pred, bd_pred])],
            ["green" if p == y else "grey" for p, y in zip(clean_pred, clean_y)]
            + ["red" if p == y else "green" for p, y in zip(bd_pred, bd_y)],
            title=f"B with {k} channels pruned: label → prediction" + (
                f" (bottom row: {poisoned[0].partition(':')[2] or 'with the trigger'}; red = the "
                "attack still works)" if poisoned else " (the trigger is unknown: clean faces only)")))

    slider.observe(lambda change: show(change["new"]), names="value")
    show(start)
    return widgets.VBox([slider, numbers, curves, verdicts])


def defenses(table):
    """Grouped bars: clean test accuracy and attack success rate of each defense, per BadNet.

    `table` has columns BadNet, model, clean test accuracy, and an attack success rate column
    per trigger (`metrics.by_trigger`; 05_beyond_pruning): one panel each.
    """
    names = list(dict.fromkeys(table.BadNet))
    columns = ["clean test accuracy", *(c for c in table.columns if c.startswith("attack success rate"))]
    fig, axes = plt.subplots(1, len(columns), figsize=(WIDTH * 0.65 * len(columns), 3.4), sharey=True,
                             squeeze=False)
    axes = axes[0]
    for ax, column in zip(axes, columns):
        wide = table.pivot(index="BadNet", columns="model", values=column)
        wide.loc[names, list(dict.fromkeys(table.model))].plot.bar(ax=ax, rot=0, width=0.8, legend=False)
        ax.set_title(f"{column} (%)", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[-1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    return fig


def fine_tuning(histories: dict):
    """Clean test accuracy and attack success rate step by step, one panel per BadNet.

    `histories` = {BadNet: {"fine-tuned": history, "fine-pruned": history}} (labkit.finetune).
    """
    fig, axes = per_badnet(histories, "training step (0: before fine-tuning)", "percent (test sets)")
    for ax, runs in zip(axes, histories.values()):
        for (run, h), ls in zip(runs.items(), ("--", "-")):
            ax.plot(h.step, h.test_accuracy, ls=ls, color=COLORS["accuracy"], label=f"{run}: clean")
            for column, label, color in attack_curves(h.columns, "test_attack_success_rate", f"{run}: attack"):
                ax.plot(h.step, h[column], ls=ls, color=color, label=label)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def learning_rates(table):
    """Clean test accuracy and attack success rate against the learning rate (log axis), one
    panel per BadNet: fine-tuning alone dashed, fine-pruning solid, B's values dotted.

    `table`: one row per run, columns BadNet, run ("fine-tuned" or "fine-pruned"), learning rate,
    clean test accuracy, attack success rate, B clean test accuracy, B attack success rate.
    """
    names = list(dict.fromkeys(table.BadNet))
    fig, axes = per_badnet(names, "peak learning rate (log scale)", "percent (test sets)")
    for ax, name in zip(axes, names):
        rows = table[table.BadNet == name]
        for run, ls, marker in (("fine-tuned", "--", "o"), ("fine-pruned", "-", "s")):
            r = rows[rows.run == run].sort_values("learning rate")
            for column, color in (("clean test accuracy", "accuracy"), ("attack success rate", "attack")):
                ax.plot(r["learning rate"], r[column], ls=ls, marker=marker, ms=4,
                        color=COLORS[color], label=f"{run}: {column}")
        for column, color in (("B clean test accuracy", "accuracy"), ("B attack success rate", "attack")):
            ax.axhline(rows[column].iloc[0], ls=":", lw=1, color=COLORS[color],
                       label=column.replace("B ", "B: "))
        ax.set_xscale("log")
        rates = sorted(rows["learning rate"].unique())
        ax.set_xticks(rates, [f"{r:g}" for r in rates], minor=False)
        ax.minorticks_off()
    axes[-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
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
