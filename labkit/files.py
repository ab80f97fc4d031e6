"""Files a user gives and files labkit writes: checked before use, written whole or not at all.

Inputs are checked once (`check_input`): a folder, a FIFO, a symlink loop or an unreadable
file is named as such. Outputs are decided and checked before any is written
(`check_outputs`); each is written under a unique temporary name beside it and moved into
place with `os.replace`; inside `transaction()` all outputs move into place together at the
end, or none does. A record and the file it describes are a pair (`write_json(partner=)`,
`read_json(partner=)`): the record holds the partner's SHA-256 and readers check it.

A temporary file `.<name>.<random>.partial<suffix>` lives beside a lock file of the same name
ending in `.partial.lock`, which its writer holds (`fcntl.flock`) until the temporary is gone;
the kernel releases the lock when the writer dies, however it dies. Before writing into a
folder, labkit removes the temporaries there whose lock nobody holds: what a killed run left,
never a live run's file. `project_lock` keeps two runs from writing one project at once.
See docs/safety.md.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
import time
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from .errors import LabError

_staged: ContextVar[list | None] = ContextVar("labkit_staged", default=None)
# a temporary's name: `.<stem>.<8 random characters from mkstemp>.partial<suffix or .lock>`
TEMPORARY = re.compile(r"\.(?P<base>.+\.[a-z0-9_]{8}\.partial)(\.[^.]*)?")
MIN_FREE = 1 << 20  # bytes: a disk with less free space is full for labkit's purposes


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


def check_outputs(paths, protect: tuple = (), force: bool = True, within=None) -> list[Path]:
    """Check every output before any is written (and before long computations).

    Each must be a new or existing regular file (not a folder, not a symbolic link, not an
    input in `protect`; an existing one only with `force`), in a folder that exists or can be
    made, that labkit can write in and whose disk is not full. With `within` (a folder labkit
    chose, such as the project), no output may lie outside it through a symbolic link.
    Stale temporaries of killed runs in the outputs' folders are removed (`sweep`).
    """
    paths = [Path(p) for p in paths]
    inputs = [Path(p) for p in protect if Path(p).exists()]
    for path in paths:
        sweep(path.parent)
        if path.is_symlink():
            raise LabError(f"{path}: the output is a symbolic link; labkit does not write "
                           "through links: choose another output")
        if within is not None and not path.resolve().is_relative_to(Path(within).resolve()):
            raise LabError(f"{path}: a symbolic link on the way leads out of {within} (to "
                           f"{path.resolve().parent}); labkit does not follow it: remove the link")
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
        try:  # a probe left by a kill has no lock: the next sweep removes it
            fd, probe = tempfile.mkstemp(dir=folder, prefix=".labkit-probe.", suffix=".partial")
            os.close(fd)
            Path(probe).unlink(missing_ok=True)
        except OSError as err:
            raise LabError(f"{folder}: labkit cannot write in this folder ({err.strerror}); "
                           "choose another output folder") from None
        if shutil.disk_usage(folder).free < MIN_FREE:
            raise LabError(f"{folder}: the disk is full (less than {MIN_FREE >> 20} MB free); "
                           "make room or choose another output folder")
    return paths


def _temporary(path: Path) -> tuple[Path, int]:
    """A new empty temporary file beside `path`, and the open, locked file that marks it live."""
    while True:
        fd, lock = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".partial.lock")
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                break  # still ours: no sweep took it before the lock
        except FileNotFoundError:
            pass
        os.close(fd)
    tmp = Path(lock[:-len(".lock")] + path.suffix)
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except BaseException:
        os.unlink(lock)
        os.close(fd)
        raise
    return tmp, fd


def _release(tmp: Path, lock: int) -> None:
    """Remove a temporary file (if still there) and then its lock: in this order, so a temporary
    never exists without its lock while its writer lives."""
    _remove(tmp)
    tmp.with_name(f".{TEMPORARY.fullmatch(tmp.name)['base']}.lock").unlink(missing_ok=True)
    os.close(lock)


def _remove(path: Path) -> None:
    """Remove a temporary: a file, or a folder a writer made in its place (a whole output folder)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def sweep(folder: Path | str) -> list[Path]:
    """Remove the temporaries in `folder` whose writer is gone (nobody holds their lock); return them."""
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    bases = {m["base"] for m in map(TEMPORARY.fullmatch, names) if m}
    for base in bases:
        lock = Path(folder, f".{base}.lock")
        try:
            fd = os.open(lock, os.O_RDWR)
        except FileNotFoundError:
            fd = None  # a temporary without its lock: its writer died while removing it
        except OSError:
            continue
        try:
            if fd is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live run's temporary
                if os.fstat(fd).st_ino != os.stat(lock).st_ino:
                    continue  # another sweep removed it and a new run took the name
            for name in names:
                found = TEMPORARY.fullmatch(name)
                if found and found["base"] == base and not name.endswith(".lock"):
                    _remove(Path(folder, name))
                    removed.append(Path(folder, name))
            if fd is not None:
                lock.unlink(missing_ok=True)
        except FileNotFoundError:
            pass  # removed meanwhile by another sweep
        finally:
            if fd is not None:
                os.close(fd)
    return removed


@contextmanager
def atomic_path(path: Path | str, protect: tuple = ()):
    """Yield a unique temporary path beside `path`; move it into place if the block succeeds.

    An interrupted or failed run leaves no half-written file (a killed one leaves a temporary
    that the next run removes); runs into one folder at the same time never share a temporary
    file. `protect` lists inputs never to overwrite.
    """
    path = check_outputs([path], protect)[0]
    made = [p for p in path.parents if not p.exists()]  # folders this output creates
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp, lock = _temporary(path)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, (0o777 if tmp.is_dir() else 0o666) & ~umask)  # not mkstemp's private 0600
        staged = _staged.get()
        if staged is None:
            _place(tmp, path)
            _release(tmp, lock)
        else:
            staged.append((tmp, path, made, lock))
    except RuntimeError as err:  # HDF5 reports a full disk on close as errno = N in the text
        _discard(tmp, lock, made)
        found = re.search(r"errno = (\d+)", str(err))
        if not found:
            raise
        code = int(found.group(1))
        raise OSError(code, os.strerror(code), str(path)) from None
    except BaseException:
        _discard(tmp, lock, made)
        raise


def _discard(tmp: Path, lock: int, made: list) -> None:
    """Remove a temporary file, its lock and the folders made for it, if nothing else is in them."""
    _release(tmp, lock)
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
        for tmp, _, made, lock in reversed(staged):
            _discard(tmp, lock, made)
        raise
    finally:
        _staged.reset(token)
    for tmp, path, _, _ in staged:
        _place(tmp, path)
    for tmp, _, _, lock in staged:
        _release(tmp, lock)


def _place(tmp: Path, path: Path) -> None:
    """Move a written temporary into place: one atomic rename, so a reader sees old or new."""
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
        staged = {dest: tmp for tmp, dest, *_ in (_staged.get() or [])}
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


# --- one run at a time per project ------------------------------------------------------------

LOCK = ".labkit.lock"  # in a project folder: locked by every run that writes data/, models/, report/
LOCKED_BY = "LABKIT_LOCKED_BY"  # set for run-all's kernels: the pid of the run-all holding the lock
_held: dict = {}  # lock file -> [fd, modes (True: exclusive) of this process's nested holds]


def project_of(path: Path | str) -> Path | None:
    """The project folder an output belongs to (the parent of its data/, models/ or report/), or None."""
    for folder in Path(path).absolute().parents:
        if folder.name in ("data", "models", "report"):
            return folder.parent
    return None


@contextmanager
def project_lock(root: Path | str | None, what: str, exclusive: bool = False):
    """Hold the project's lock while the block runs (`hold_project`); None: no project, no lock."""
    if root is None:
        yield
        return
    key = hold_project(root, what, exclusive)
    try:
        yield
    finally:
        _let_go(key)


def hold_project(root: Path | str, what: str, exclusive: bool = False) -> str:
    """Lock the project folder `root` for this process: shared (commands, notebook kernels: they
    write whole files and may run together) or `exclusive` (run-all, which empties its report
    folder). A lock held elsewhere is refused in one line naming its holder; the kernel releases
    it when the holder dies. Holding it again in the same process nests. Returns its key."""
    path = Path(root).absolute() / LOCK
    key = str(path)
    if os.environ.get(LOCKED_BY) == str(os.getppid()):  # a kernel of run-all, which holds it
        _held.setdefault(key, [None, []])[1].append(False)
        return key
    if key in _held:
        fd, modes = _held[key]
        if fd is not None and exclusive and not any(modes):
            try:
                _flock(fd, path, True)  # upgrade this process's shared hold
            except LabError:
                fcntl.flock(fd, fcntl.LOCK_SH)  # a failed upgrade gives up the shared lock
                raise
        modes.append(exclusive)
        return key
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:  # a project not made yet, or read-only: the output checks say so
            _held[key] = [None, [exclusive]]
            return key
        try:
            _flock(fd, path, exclusive)
        except BaseException:
            os.close(fd)
            raise
        if _is(path, fd):
            break
        os.close(fd)  # its last holder removed it meanwhile: take the new one
    holders = [line for line in _holders(path) if not line.endswith(f"(pid {os.getpid()})")]
    path.write_text("".join(f"{line}\n" for line in [*holders, f"{what} (pid {os.getpid()})"]))
    _held[key] = [fd, [exclusive]]
    return key


def _is(path: Path, fd: int) -> bool:
    """Whether `path` still names the file open as `fd`."""
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _flock(fd: int, path: Path, exclusive: bool) -> None:
    for _ in range(20):  # a last holder removing the file holds it alone for a moment
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if not _is(path, fd):
                return  # removed by its last holder: the caller opens the new one
            time.sleep(0.02)
    holders = "; ".join(_holders(path)) or "another process"
    raise LabError(f"{path.parent}: another labkit run is using this project ({holders}); "
                   "wait for it to finish (a notebook's kernel holds it until you shut the "
                   "kernel down), then run again")


def _holders(path: Path) -> list[str]:
    """The holders noted in a lock file ('what (pid N)') whose process is still alive."""
    alive = []
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return alive
    for line in lines:
        found = re.search(r"\(pid (\d+)\)$", line)
        try:
            if found:
                os.kill(int(found.group(1)), 0)
                alive.append(line)
        except ProcessLookupError:
            pass
        except PermissionError:  # alive, another user's
            alive.append(line)
    return alive


def _let_go(key: str) -> None:
    """End one hold of this process; the last one removes the lock file if nobody else holds it."""
    fd, modes = _held[key]
    exclusive = modes.pop()
    if modes and fd is not None and exclusive and not any(modes):
        fcntl.flock(fd, fcntl.LOCK_SH)  # back to this process's shared hold
    if modes:
        return
    del _held[key]
    if fd is None:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if _is(Path(key), fd):
            os.unlink(key)
    except BlockingIOError:
        pass  # others hold it: the last of them removes it
    finally:
        os.close(fd)
