"""The write-up's numbers: the table for each threshold X, measured sentences, the ablation, report.md.

Every number comes from a sweep passed in; nothing is typed in by hand. The verdict sentences
are chosen in 04_analysis.ipynb by a rule shown there; this module only states measurements.
"""
from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .files import atomic_path
from .prune import RULE, drop_text, stop_step


def first_step(values, condition) -> int | None:
    """The first k where `condition(values[k])` holds, or None."""
    hits = np.flatnonzero(condition(np.asarray(values)))
    return int(hits[0]) if hits.size else None


def results(sweep, repaired: dict):
    """One row per threshold X: B' and GoodNet on the test sets (a sweep with test columns)."""
    import pandas as pd

    t = sweep.table
    return pd.DataFrame([{"X (validation accuracy drop)": drop_text(r.drop),
                          f"channels pruned of {sweep.steps}": r.step,
                          "B' clean test accuracy": t.test_accuracy[r.step],
                          "B' attack success rate": t.test_attack_success_rate[r.step],
                          "G clean test accuracy": t.goodnet_accuracy[r.step],
                          "G attack success rate": t.goodnet_attack_success_rate[r.step],
                          "clean faces flagged": t.goodnet_flagged_clean[r.step]}
                         for r in repaired.values()])


def measured(sweep, beaten: float) -> str:
    """Sentences of measurements only: B on the test sets, and where the attack first falls below `beaten` %."""
    t = sweep.table
    k = first_step(t.test_attack_success_rate, lambda a: a < beaten)
    start = (f"B: clean test accuracy {t.test_accuracy[0]:.2f} %, attack success rate "
             f"{t.test_attack_success_rate[0]:.2f} %.")
    if k is None:
        return start + (f" No number of pruned channels brings B_k's attack success rate below "
                        f"{beaten:g} %.")
    return start + (f" B_k's attack success rate first falls below {beaten:g} % with {k} of "
                    f"{sweep.steps} channels pruned, where its clean test accuracy is "
                    f"{t.test_accuracy[k]:.2f} %.")


@dataclass
class Ablation:
    text: str
    table: object  # pandas.DataFrame


def order_ablation(sweeps: dict, drop: float, beaten: float) -> Ablation:
    """Compare pruning orders: channels pruned before validation accuracy falls `drop` points,
    and before the attack success rate falls below `beaten` % (None: never)."""
    import pandas as pd

    rows = []
    for order, s in sweeps.items():
        t = s.table
        k = stop_step(t.valid_accuracy, drop)
        k_beaten = first_step(t.valid_attack_success_rate, lambda a: a < beaten)
        rows.append({"order": order,
                     f"channels pruned at a {drop:g}-point accuracy drop": k,
                     "attack success rate then": None if k is None else t.valid_attack_success_rate[k],
                     f"channels pruned until attack success < {beaten:g} %": k_beaten,
                     "accuracy then": None if k_beaten is None else t.valid_accuracy[k_beaten]})
    table = pd.DataFrame(rows)
    for col in table.columns[[1, 3]]:  # channel counts: whole numbers, or missing if never reached
        table[col] = table[col].astype("Int64")
    text = " ".join(
        f"In {row['order']} order, validation accuracy falls {drop:g} points below B's after "
        + ("no number of channels" if pd.isna(row.iloc[1]) else
           f"{int(row.iloc[1])} channel{'' if row.iloc[1] == 1 else 's'}")
        + ("." if pd.isna(row.iloc[2]) else f", when the attack success rate is {row.iloc[2]:.2f} %.")
        for _, row in table.iterrows())
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


def write_report(lab, badnet, sweep, table, text: str, ablation: Ablation) -> Path:
    """Write `report.md` in the lab's report folder from the results of the notebooks; return it.

    `table` is `results(...)`, `text` the analysis (verdicts and measurements). Figures that
    01-04 saved in the same folder are included where present.
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
        markdown_table(table),
        figure("04_test_curves", "Test accuracy and attack success rate against channels pruned"),
        figure("03_verdicts", "GoodNet's verdicts on sample faces"),
        "## 3. Does pruning work?",
        text,
        "## 4. Ablation: the pruning order",
        ablation.text,
        markdown_table(ablation.table),
        figure("04_ablation", "Validation accuracy and attack success rate for three pruning orders"),
    ]
    path = folder / "report.md"
    with atomic_path(path) as tmp:
        tmp.write_text("\n\n".join(p for p in parts if p) + "\n")
    return path


def add_section(report: Path | str, heading: str, parts) -> Path:
    """Put a section (`heading`, then `parts`) at the end of a report.md that `write_report` wrote,
    replacing the one with the same heading from an earlier run (05_beyond_pruning.ipynb's)."""
    report = Path(report)
    text = report.read_text(encoding="utf-8")
    start = text.find(heading)
    if start >= 0:
        end = text.find("\n## ", start + len(heading))
        text = text[:start] + (text[end + 1:] if end >= 0 else "")
    section = "\n\n".join(p for p in (heading, *parts) if p)
    with atomic_path(report) as tmp:
        tmp.write_text(text.rstrip("\n") + "\n\n" + section + "\n", encoding="utf-8")
    return report
