"""Which poisoned test files a lab has, by trigger, with their targets (06_unknown_trigger).

A BadNet's poisoned test files are what the grader evaluates a defense with; the defenses of 06
never read them. A BadNet without such files has an unknown trigger: the defenses still run on
its clean faces and only the detection and attack columns stay empty. The demo's `anonymous`
BadNet is such a one: its poisoned faces are the grader's (`labkit demo --reveal DIR`), read only
by the grader's view (`poisoned_tests(lab, grader=DIR)`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .data import BADNET_TRIGGERS, GRADER_TRIGGERS, Lab, Split, poisoned_file


def poisoned_tests(lab: Lab, grader: Path | str | None = None) -> dict[str, Split]:
    """{trigger: poisoned test Split}: the lab's own files on disk; with `grader` (a folder
    `labkit demo --reveal` wrote), the grader's files of the triggers kept from the defender."""
    if grader is None:
        return {t: s for t, s in lab.poisoned("test").items() if s.path.is_file()}
    kept = [t for t in BADNET_TRIGGERS.get(lab.badnet, ()) if t in GRADER_TRIGGERS]
    files = {t: Path(grader) / poisoned_file(t, "test") for t in kept}
    return {t: Split(p, "test", True, f"{t}-poisoned test set (the grader's)",
                     "write it with `labkit demo --reveal DIR`") for t, p in files.items() if p.is_file()}


def target(split: Split) -> int:
    """The attacker's target of a poisoned file: its most common label."""
    return int(np.bincount(split.labels()).argmax())
