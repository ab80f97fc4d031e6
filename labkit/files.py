"""Writing outputs safely: whole files or nothing, never over a file the user gave."""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path

from .errors import LabError


@contextmanager
def atomic_path(path: Path | str, protect: tuple = ()):
    """Yield a temporary path beside `path`; move it into place only if the block succeeds.

    An interrupted run leaves no half-written file. `protect` lists input files that must
    never be overwritten (the BadNet a student pruned, say).
    """
    path = Path(path)
    for given in protect:
        if Path(given).exists() and path.exists() and path.resolve() == Path(given).resolve():
            raise LabError(f"{path}: refusing to overwrite an input file; choose another output folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path | str, obj, protect: tuple = ()) -> Path:
    """Write `obj` as indented JSON, atomically."""
    with atomic_path(path, protect) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")
    return Path(path)
