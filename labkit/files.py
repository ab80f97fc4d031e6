"""Files a user gives and files labkit writes: checked before use, written whole or not at all.

Inputs are checked once (`check_input`): a folder, a FIFO, a symlink loop or an unreadable
file is named as such. Outputs are decided and checked before any is written
(`check_outputs`); each is written under a unique temporary name beside it and moved into
place with `os.replace`; inside `transaction()` all outputs move into place together at the
end, or none does. A record and the file it describes are a pair (`write_json(partner=)`,
`read_json(partner=)`): the record holds the partner's SHA-256 and readers check it.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import stat
import tempfile
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from .errors import LabError

_staged: ContextVar[list | None] = ContextVar("labkit_staged", default=None)


def check_input(path: Path | str, what: str = "file", hint: str = "check the path") -> Path:
    """Refuse anything but an existing, readable, non-empty regular file, naming what it is."""
    path = Path(path)
    try:
        info = os.stat(path)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise LabError(f"{path}: a symbolic link that loops back on itself; "
                           "point it at the real file") from None
        if err.errno == errno.ENOENT:
            broken = " (a symbolic link to a missing file)" if path.is_symlink() else ""
            raise LabError(f"{path}: {what} not found{broken}; {hint}") from None
        raise LabError(f"{path}: cannot be opened ({err.strerror}); {hint}") from None
    if stat.S_ISDIR(info.st_mode):
        raise LabError(f"{path}: is a folder, not a {what}; give the file inside it")
    if not stat.S_ISREG(info.st_mode):
        raise LabError(f"{path}: is not a regular file (a pipe, socket or device); "
                       f"give a {what} saved on disk")
    try:
        with open(path, "rb"):
            pass
    except OSError as err:
        raise LabError(f"{path}: cannot be read ({err.strerror}); check its permissions") from None
    if info.st_size == 0:
        raise LabError(f"{path}: the {what} is empty (0 bytes); download or build it again")
    return path


def check_outputs(paths, protect: tuple = (), force: bool = True) -> list[Path]:
    """Check every output before any is written (and before long computations).

    Each must be a new or existing regular file (not a folder, not a symbolic link, not an
    input in `protect`; an existing one only with `force`), in a folder that exists or can be
    made and that labkit can write in.
    """
    paths = [Path(p) for p in paths]
    inputs = [Path(p) for p in protect if Path(p).exists()]
    for path in paths:
        if path.is_symlink():
            raise LabError(f"{path}: the output is a symbolic link; labkit does not write "
                           "through links: choose another output")
        if path.exists() and not path.is_file():
            raise LabError(f"{path}: the output exists and is not a file; choose another output")
        if any(path.exists() and path.samefile(p) for p in inputs):
            raise LabError(f"{path}: refusing to overwrite an input file; choose another output folder")
        if path.exists() and not force:
            raise LabError(f"{path}: already exists; pass --force to replace it or choose another "
                           "output folder")
        folder = path.parent
        while not folder.exists() and not folder.is_symlink():
            folder = folder.parent
        if not folder.is_dir():
            raise LabError(f"{folder}: is a file, so {path} cannot be written below it; "
                           "choose another output folder")
        try:
            fd, probe = tempfile.mkstemp(dir=folder, prefix=".labkit-probe-")
            os.close(fd)
            os.unlink(probe)
        except OSError as err:
            raise LabError(f"{folder}: labkit cannot write in this folder ({err.strerror}); "
                           "choose another output folder") from None
    return paths


@contextmanager
def atomic_path(path: Path | str, protect: tuple = ()):
    """Yield a unique temporary path beside `path`; move it into place if the block succeeds.

    An interrupted or failed run leaves no half-written file; runs into one folder at the
    same time never share a temporary file. `protect` lists inputs never to overwrite.
    """
    path = check_outputs([path], protect)[0]
    made = [p for p in path.parents if not p.exists()]  # folders this output creates
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".partial{path.suffix}")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # as an ordinary file, not mkstemp's private 0600
        staged = _staged.get()
        if staged is None:
            os.replace(tmp, path)
        else:
            staged.append((tmp, path, made))
    except RuntimeError as err:  # HDF5 reports a full disk on close as errno = N in the text
        _discard(tmp, made)
        found = re.search(r"errno = (\d+)", str(err))
        if not found:
            raise
        code = int(found.group(1))
        raise OSError(code, os.strerror(code), str(path)) from None
    except BaseException:
        _discard(tmp, made)
        raise


def _discard(tmp: Path, made: list) -> None:
    """Remove a temporary file and the folders made for it, if nothing else is in them."""
    tmp.unlink(missing_ok=True)
    for folder in made:  # deepest first
        try:
            folder.rmdir()
        except OSError:
            break


@contextmanager
def transaction():
    """Outputs written with `atomic_path` inside this block move into place together at its end;
    if the block fails, none does and their temporary files are removed."""
    if _staged.get() is not None:  # nested: the outer block decides
        yield
        return
    staged = []
    token = _staged.set(staged)
    try:
        yield
    except BaseException:
        for tmp, _, made in reversed(staged):
            _discard(tmp, made)
        raise
    finally:
        _staged.reset(token)
    for tmp, path, _ in staged:
        os.replace(tmp, path)


def file_sha256(path: Path | str) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json(path: Path | str, obj, protect: tuple = (), partner: Path | str | None = None) -> Path:
    """Write `obj` as indented JSON, atomically; with `partner`, record that file's SHA-256
    (written just before, maybe in the same transaction) so readers can check the pair."""
    if partner is not None:
        partner = Path(partner)
        staged = {dest: tmp for tmp, dest, _ in (_staged.get() or [])}
        obj = {**obj, "partner_sha256": file_sha256(staged.get(partner, partner))}
    with atomic_path(path, protect) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")
    return Path(path)


def read_json(path: Path | str, partner: Path | str | None = None) -> dict:
    """Read a JSON record written by `write_json`; with `partner`, check it belongs to that file."""
    path = check_input(path, "record")
    try:
        obj = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise LabError(f"{path}: not a readable JSON record ({err}); write it again") from None
    if not isinstance(obj, dict):
        raise LabError(f"{path}: not a labkit record (a JSON object); write it again")
    if partner is not None:
        partner = check_input(partner, "file")
        if obj.get("partner_sha256") != file_sha256(partner):
            raise LabError(f"{path}: this record does not belong to {Path(partner).name} (another "
                           "or an interrupted run wrote one of them); run it again to write both")
    return obj
