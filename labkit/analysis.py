"""The write-up: what the sweep's numbers say about pruning, in sentences, and the report.

Every number in the text comes from a sweep passed in; nothing is typed in by hand.
Shown in 04_analysis.ipynb.
"""
from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .files import atomic_path
from .prune import RULE

WORKS, WEAK = 10.0, 50.0  # attack success rate (percentage points) below which the attack is beaten / above which it survives


@dataclass
class Findings:
    """The analysis in sentences (`text`, Markdown) and the numbers behind it."""

    text: str
    asr_at: dict = field(default_factory=dict)  # X -> attack success rate of B' on the poisoned test set
    verdict: str = ""  # "works", "partly" or "weak"


def first_step(values, condition) -> int | None:
    """The first k where `condition(values[k])` holds, or None."""
    hits = np.flatnonzero(condition(np.asarray(values)))
    return int(hits[0]) if hits.size else None


def findings(sweep, repaired: dict) -> Findings:
    """Does pruning work on this BadNet, at what cost, and why: from a sweep with test columns."""
    t = sweep.table
    acc0, asr0 = t.test_accuracy[0], t.test_attack_success_rate[0]
    asr_at = {r.drop: float(t.test_attack_success_rate[r.step]) for r in repaired.values()}
    largest = max(repaired.values(), key=lambda r: r.drop)
    smallest = min(repaired.values(), key=lambda r: r.drop)
    k_beaten = first_step(t.test_attack_success_rate, lambda a: a < WORKS)
    if asr_at[smallest.drop] < WORKS:
        verdict = "works"
        summary = (f"**Pruning works on this BadNet.** Already at X = {smallest.drop:g} "
                   f"({smallest.step} of {sweep.steps} channels pruned) the attack success rate on the "
                   f"poisoned test set falls from {asr0:.2f} % to {asr_at[smallest.drop]:.2f} %, while clean "
                   f"test accuracy goes from {acc0:.2f} % to {t.test_accuracy[smallest.step]:.2f} %. The "
                   "backdoor lived in channels that clean faces leave dormant, exactly where pruning looks.")
    elif asr_at[largest.drop] >= WEAK:
        verdict = "weak"
        summary = (f"**Pruning alone is a weak defense against this BadNet.** Clean accuracy falls before "
                   f"the attack success rate does: at X = {largest.drop:g} ({largest.step} of {sweep.steps} "
                   f"channels pruned) clean test accuracy is down from {acc0:.2f} % to "
                   f"{t.test_accuracy[largest.step]:.2f} %, yet the attack still succeeds on "
                   f"{asr_at[largest.drop]:.2f} % of the faces with sunglasses. The backdoor uses channels "
                   "that clean faces need too, so the attacker may have made it prune-aware; "
                   "fine-tuning after pruning (Fine-Pruning) or other defenses are needed.")
    else:
        verdict = "partly"
        summary = (f"**Pruning works only at a price here.** At X = {smallest.drop:g} the attack still "
                   f"succeeds on {asr_at[smallest.drop]:.2f} % of the faces with sunglasses; at "
                   f"X = {largest.drop:g} ({largest.step} channels) it is down to {asr_at[largest.drop]:.2f} %, "
                   f"but clean test accuracy has fallen from {acc0:.2f} % to "
                   f"{t.test_accuracy[largest.step]:.2f} %.")
    beaten = (f"The attack success rate first drops below {WORKS:g} % with {k_beaten} channels pruned, "
              f"where clean test accuracy is {t.test_accuracy[k_beaten]:.2f} %." if k_beaten is not None
              else f"No number of pruned channels brings the attack success rate below {WORKS:g} %.")
    g = {r.drop: r.step for r in repaired.values()}
    goodnet = " ".join(
        f"With X = {x:g}, GoodNet flags {t.goodnet_flagged_clean[k]:.2f} % of clean test faces (its clean "
        f"accuracy is {t.goodnet_accuracy[k]:.2f} %) and leaves an attack success rate of "
        f"{t.goodnet_attack_success_rate[k]:.2f} %." for x, k in sorted(g.items()))
    text = "\n\n".join([summary, beaten, "**GoodNet.** " + goodnet,
                        f"B' was chosen by the rule: {RULE}."])
    return Findings(text, asr_at, verdict)


@dataclass
class Ablation:
    text: str
    table: object  # pandas.DataFrame


def order_ablation(sweeps: dict, drop: float = 10.0) -> Ablation:
    """Compare pruning orders by how far each gets before validation accuracy falls `drop` points."""
    import pandas as pd

    rows = []
    for order, s in sweeps.items():
        t = s.table
        k = first_step(t.valid_accuracy, lambda a: a <= t.valid_accuracy[0] - drop)
        k_beaten = first_step(t.valid_attack_success_rate, lambda a: a < WORKS)
        rows.append({"order": order,
                     f"channels pruned at a {drop:g}-point accuracy drop": k,
                     "attack success rate then": None if k is None else t.valid_attack_success_rate[k],
                     f"channels pruned until attack success < {WORKS:g} %": k_beaten,
                     "accuracy then": None if k_beaten is None else t.valid_accuracy[k_beaten]})
    table = pd.DataFrame(rows)
    for col in table.columns[[1, 3]]:  # channel counts: whole numbers, or missing if never reached
        table[col] = table[col].astype("Int64")
    col = table.columns[1]
    steps = dict(zip(table["order"], table[col]))

    def channels(order):
        return "never (all channels pruned first)" if pd.isna(steps.get(order)) else f"{int(steps[order])} channels"

    text = (f"On the validation data, accuracy falls {drop:g} points below B's after {channels('increasing')} with the "
            f"method (least active first), after {channels('decreasing')} when the most active channels go "
            f"first, and after {channels('random')} in a random order. Pruning the most active channels "
            "first removes what clean faces rely on and wrecks accuracy early, without aiming at the "
            "dormant channels a backdoor hides in: it is the mistake to avoid, not the method.")
    return Ablation(text, table)


def markdown_table(df, digits: int = 2) -> str:
    """A pandas DataFrame as a Markdown pipe table, floats with `digits` decimals."""
    import pandas as pd

    def cell(value):
        if not isinstance(value, str) and pd.isna(value):
            return "n/a"
        return f"{value:.{digits}f}" if isinstance(value, (float, np.floating)) else str(value)

    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def write_report(lab, badnet, sweep, results, found: Findings, ablation: Ablation) -> Path:
    """Write `report.md` in the lab's report folder from the results of the notebooks; return it.

    Figures that 01-04 saved in the same folder are included where present.
    """
    folder = lab.report_dir

    def figure(name, caption):
        return f"![{caption}]({name}.png)" if (folder / f"{name}.png").is_file() else ""

    source = ("the offline demo lab built by labkit (synthetic faces)" if lab.name == "demo"
              else "the course's data files")
    parts = [
        "# Backdoor defense by pruning: lab report",
        f"Data: {source}. BadNet: `{badnet.path.name}` ({badnet.num_classes} classes). "
        f"Written by labkit on {datetime.date.today().isoformat()}; every number below was computed "
        "in the run that wrote this report.",
        "## 1. The BadNet",
        f"Clean test accuracy {sweep.table.test_accuracy[0]:.2f} %, attack success rate "
        f"{sweep.table.test_attack_success_rate[0]:.2f} % on the poisoned test set.",
        figure("01_faces", "Clean faces and faces with sunglasses, with the BadNet's predictions"),
        figure("01_activations", "Mean pool_3 activation per channel, clean vs sunglasses"),
        "## 2. Pruning and GoodNet",
        f"Channels of `conv_3` are pruned in increasing order of mean activation on clean validation "
        f"data. {RULE}.",
        markdown_table(results),
        figure("04_test_curves", "Test accuracy and attack success rate against channels pruned"),
        figure("03_verdicts", "GoodNet's verdicts on sample faces"),
        "## 3. Does pruning work?",
        found.text,
        "## 4. Ablation: the pruning order",
        ablation.text,
        markdown_table(ablation.table),
        figure("04_ablation", "Validation accuracy and attack success rate for three pruning orders"),
    ]
    path = folder / "report.md"
    with atomic_path(path) as tmp:
        tmp.write_text("\n\n".join(p for p in parts if p) + "\n")
    return path
