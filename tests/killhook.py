"""Test hook: SIGKILL a labkit run at its k-th write (a temporary made, or one moved into place).

Writes are counted in a file shared by every process of the run (run-all and its kernels); the
process that reaches write k kills the run's first process (`KILL_ROOT`) and itself.
"""
import os
import signal

from labkit import files


def install(kill_at: int, counter: str) -> None:
    made, place = files._temporary, files._place
    os.environ.setdefault("KILL_ROOT", str(os.getpid()))  # the run's first process; kernels inherit it

    def step():
        fd = os.open(counter, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, b"w")
        count = os.fstat(fd).st_size
        os.close(fd)
        if count == kill_at:
            root = int(os.environ["KILL_ROOT"])
            if root != os.getpid():
                os.kill(root, signal.SIGKILL)
            os.kill(os.getpid(), signal.SIGKILL)

    def temporary(path):
        found = made(path)
        step()  # killed with an empty temporary and its lock
        return found

    def placed(tmp, path):
        step()  # killed with the temporary written, not yet in place
        place(tmp, path)

    files._temporary, files._place = temporary, placed


if os.environ.get("KILL_AT"):  # imported as sitecustomize by every Python of the run
    install(int(os.environ["KILL_AT"]), os.environ["KILL_COUNTER"])
