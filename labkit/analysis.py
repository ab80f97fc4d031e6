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
from .metrics import by_trigger, trigger_column
from .prune import RULE, drop_text, stop_step

UNKNOWN = ("the trigger is unknown to the defender, so there are no poisoned faces to measure the "
           "attack on")


def attacks(row, column: str) -> dict:
    """{trigger: value} of the attack `column` in `row` (a table row or dict; `metrics.by_trigger`):
    {"": value} for one trigger, one entry per trigger for several, {} where it is unknown."""
    return {t: row[c] for t, c in by_trigger(list(row.keys()), column).items()}


def listed(values: dict) -> str:
    """Percentages per trigger in words: "98.20 %", or "98.20 % (sunglasses), 91.00 % (eyebrows)"."""
    return ", ".join(f"{v:.2f} %" + (f" ({t})" if t else "") for t, v in values.items())


def suffix(trigger: str) -> str:
    """What a sentence adds for one trigger of several: " (eyebrows)"; "" for the only one."""
    return f" ({trigger})" if trigger else ""


def named(column: str, values: dict) -> dict:
    """{column name: value} for per-trigger `values` ({trigger: value}; see `attacks`)."""
    return {trigger_column(column, t) if t else column: v for t, v in values.items()}


def uneven(flagged: dict, most: float = 50.0) -> str:
    """A sentence where G flags most (>= `most` %) of the faces with some triggers but not of
    those with others ({trigger: % flagged}); "" where it treats every trigger alike."""
    caught = [t for t, v in flagged.items() if v >= most]
    missed = [t for t, v in flagged.items() if v < most]
    if not caught or not missed:
        return ""
    return (f"G catches one trigger but not another: it flags most faces with {', '.join(caught)}, "
            f"and fewer than {most:g} % of those with {', '.join(missed)}.")


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
                          **named("B' attack success rate", attacks(t.iloc[r.step], "test_attack_success_rate")),
                          "G clean test accuracy": t.goodnet_accuracy[r.step],
                          **named("G attack success rate", attacks(t.iloc[r.step], "goodnet_attack_success_rate")),
                          "clean faces flagged": t.goodnet_flagged_clean[r.step]}
                         for r in repaired.values()])


def measured(sweep, beaten: float) -> str:
    """Sentences of measurements only: B on the test sets, and where the attack first falls below `beaten` %."""
    t = sweep.table
    columns = by_trigger(list(t.columns), "test_attack_success_rate")
    if not columns:
        return f"B: clean test accuracy {t.test_accuracy[0]:.2f} %; {UNKNOWN}."
    text = [f"B: clean test accuracy {t.test_accuracy[0]:.2f} %, attack success rate "
            f"{listed(attacks(t.iloc[0], 'test_attack_success_rate'))}."]
    for trigger, column in columns.items():
        k = first_step(t[column], lambda a: a < beaten)
        what = f"B_k's attack success rate{suffix(trigger)}"
        text.append(f"No number of pruned channels brings {what} below {beaten:g} %." if k is None
                    else f"{what} first falls below {beaten:g} % with {k} of {sweep.steps} channels "
                         f"pruned, where its clean test accuracy is {t.test_accuracy[k]:.2f} %.")
    return " ".join(text)


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
        row = {"order": order, f"channels pruned at a {drop:g}-point accuracy drop": k}
        if "valid_attack_success_rate" in t:  # all triggers together; absent if it is unknown
            k_beaten = first_step(t.valid_attack_success_rate, lambda a: a < beaten)
            row.update({"attack success rate then": None if k is None else t.valid_attack_success_rate[k],
                        f"channels pruned until attack success < {beaten:g} %": k_beaten,
                        "accuracy then": None if k_beaten is None else t.valid_accuracy[k_beaten]})
        rows.append(row)
    table = pd.DataFrame(rows)
    for col in table.columns[[1, 3] if len(table.columns) > 2 else [1]]:  # channel counts: whole
        table[col] = table[col].astype("Int64")  # numbers, or missing if never reached
    text = " ".join(
        f"In {row['order']} order, validation accuracy falls {drop:g} points below B's after "
        + ("no number of channels" if pd.isna(row.iloc[1]) else
           f"{int(row.iloc[1])} channel{'' if row.iloc[1] == 1 else 's'}")
        + ("." if len(row) < 3 or pd.isna(row.iloc[2])
           else f", when the attack success rate is {row.iloc[2]:.2f} %.")
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
        f"Clean test accuracy {sweep.table.test_accuracy[0]:.2f} %, "
        + (f"attack success rate {listed(attack)} on the poisoned test set{'s' if len(attack) > 1 else ''}."
           if (attack := attacks(sweep.table.iloc[0], "test_attack_success_rate")) else f"but {UNKNOWN}."),
        figure("01_faces", "Clean faces and faces with the trigger, with the BadNet's predictions"),
        figure("01_activations", "Mean pool_3 activation per channel, clean vs poisoned faces"),
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
