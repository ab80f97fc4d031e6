"""Saving and loading the repaired networks B': `repaired_<X>.h5` with `repaired_<X>.json` beside it.

The JSON records how B' was chosen, so a folder of B' files explains itself. Written by
02_prune.ipynb and `labkit prune`, read by 03_goodnet.ipynb.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import LabError
from .files import file_sha256, read_json, write_json
from .modelfile import load_model
from .models import save_model
from .prune import CONV, RULE, Repaired, drop_text


def save_repaired(repaired, out_dir: Path | str, source: Path | str | None = None,
                  protect: tuple = ()) -> list[Path]:
    """Write each B' as `repaired_<X>.h5` with `repaired_<X>.json` beside it; return the paths.

    `repaired` is one Repaired, a list of them or `repair`'s dict. The JSON records the rule,
    the channels pruned in order, the step, validation accuracy of B and B', the source model's
    SHA-256 and the input scale. Writes are atomic and never replace `source` or `protect`.
    """
    items = repaired.values() if isinstance(repaired, dict) else (
        [repaired] if isinstance(repaired, Repaired) else repaired)
    out_dir, written = Path(out_dir), []
    for r in items:
        src = Path(source) if source is not None else r.source
        guard = (*protect, *([src] if src else []))
        model_path = out_dir / f"repaired_{drop_text(r.drop)}.h5"
        save_model(r.net, model_path, protect=guard)
        info = {"rule": RULE, "drop": r.drop, "step": r.step, "pruned_channels": r.pruned.tolist(),
                "layer": CONV, "valid_accuracy_badnet": r.valid_accuracy_badnet,
                "valid_accuracy": r.valid_accuracy, "input_scale": r.net.scale,
                "source_model": str(src) if src else None,
                "source_sha256": file_sha256(src) if src and src.is_file() else None}
        written += [model_path, write_json(model_path.with_suffix(".json"), info, protect=guard,
                                           partner=model_path)]
    return written


def load_repaired(folder: Path | str, drops=None) -> dict:
    """The B' networks `save_repaired` wrote in `folder`, as {X: Repaired} sorted by X.

    `drops` limits it to those thresholds X (each must be there), e.g. the ones one run of 02 saved.
    """
    folder = Path(folder)
    paths = (sorted(folder.glob("repaired_*.json")) if drops is None else
             [folder / f"repaired_{drop_text(x)}.json" for x in drops])
    found = {}
    for info_path in paths:
        if not info_path.is_file():
            raise LabError(f"{info_path}: not found; run 02_prune.ipynb (or `labkit prune`) "
                           "with this drop first")
        info = read_json(info_path, partner=info_path.with_suffix(".h5"))
        net = load_model(info_path.with_suffix(".h5"))
        found[float(info["drop"])] = Repaired(
            net, float(info["drop"]), np.asarray(info["pruned_channels"]), int(info["step"]),
            info["valid_accuracy_badnet"], info["valid_accuracy"],
            Path(info["source_model"]) if info.get("source_model") else None)
    if not found:
        raise LabError(f"{folder}: no repaired networks (repaired_X.h5 with .json) here; "
                       "run 02_prune.ipynb (or `labkit prune`) first")
    return dict(sorted(found.items()))
