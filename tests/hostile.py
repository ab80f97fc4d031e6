"""Helpers for the hostile-input tests: run labkit as a student would and check the refusal."""
import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from labkit import cli


def forbid(monkeypatch, module, name: str, what: str) -> None:
    """Make `module.name` (a long computation) fail the test if called: refusals come first."""
    def called(*args, **kwargs):
        raise AssertionError(f"{what} before the input was checked")
    monkeypatch.setattr(module, name, called)


def snapshot(*folders) -> dict:
    """Every file below `folders` (hidden temporaries too) with a hash of its bytes."""
    found = {}
    for folder in folders:
        for root, _, files in os.walk(folder):
            for name in files:
                path = Path(root, name)
                if path.is_file() and not path.is_symlink():
                    found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
                else:
                    found[str(path)] = "not a regular file"
    return found


def check_refusal(code: int, err: str, expect: str) -> str:
    """Exit status 2 and exactly one line `labkit: error: ...` holding `expect`, no escapes."""
    assert code == 2, err
    assert "Traceback" not in err and "\x1b" not in err
    # what a terminal shows: a progress bar cleared with "\r" leaves nothing behind
    lines = [line.rsplit("\r", 1)[-1] for line in err.rstrip("\n").split("\n")]
    assert len(lines) == 1, err
    assert lines[0].startswith("labkit: error: "), err
    assert expect in lines[0], err
    return lines[0]


def refused(capsys, args, expect: str, *folders) -> str:
    """Run `labkit ARGS` in this process; it must refuse with one line and change no file."""
    before = snapshot(*folders)
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    line = check_refusal(code, err, expect)
    assert snapshot(*folders) == before
    return line


def run_limited(args, memory_mb: int = 0, file_kb: int = 0, cwd=None):
    """Run `labkit ARGS` in a subprocess whose address space grows by at most `memory_mb`
    after TensorFlow is imported, or whose files can grow to at most `file_kb` (a full disk)."""
    script = textwrap.dedent(f"""
        import resource, signal, sys
        from labkit import cli
        cli.import_tensorflow_quietly()
        if {memory_mb}:
            vm = int(next(l for l in open('/proc/self/status') if l.startswith('VmSize')).split()[1])
            limit = (vm + {memory_mb} * 1024) * 1024
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        if {file_kb}:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, ({file_kb} * 1024, {file_kb} * 1024))
        sys.exit(cli.main(sys.argv[1:]))
    """)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, env=env)
    return proc.returncode, proc.stdout, proc.stderr
