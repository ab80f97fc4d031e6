"""A run killed (SIGKILL) at any of its writes, then run again, leaves exactly the files of a clean
run: the next run removes what the killed one left. Two runs at once never mix their files."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
from hostile import check_refusal
from test_report import notebook  # run-all passes dataset='lab' to it

from labkit import demo, files
from labkit.data import DEMO_BADNETS
from labkit.notebook import COURSE_FILES

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3",
       "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS), os.environ.get("PYTHONPATH", "")])}

# imports TensorFlow once, then runs each request in a forked child: a kill costs no start-up
DRIVER = textwrap.dedent("""
    import json, os, sys
    from killhook import install
    from labkit import cli
    cli.import_tensorflow_quietly()
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 1), os.dup2(null, 2)
            if request["kill_at"]:
                install(request["kill_at"], request["counter"])
            code = 0
            try:
                exec(request["code"])
            except SystemExit as end:
                code = end.code
            except BaseException:
                code = 99
            os._exit(code or 0)
        _, status = os.waitpid(pid, 0)
        print("killed" if os.WIFSIGNALED(status) else os.WEXITSTATUS(status), flush=True)
""")


def listing(folder: Path) -> list:
    """Every file and folder below `folder` (hidden ones too), relative to it."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def kill_at_each_write(tmp_path, code: str, root_of, one_folder: bool = False) -> int:
    """Run `code` (with {root} its project folder) killed at write 1, 2, ... each in a fresh
    folder, then again to the end there; each folder must hold what a clean run's holds.
    `one_folder` (for slow commands): each run in the same folder, the one after a kill killed
    one write later, until a run ends; it must leave what a clean run leaves, and each run
    finds only the temporaries of the run just killed (it removes them first).
    Returns the number of writes."""
    driver = subprocess.Popen([sys.executable, "-c", DRIVER], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=ENV, cwd=tmp_path)

    def run(root, kill_at=0):
        request = {"kill_at": kill_at, "counter": str(tmp_path / f"count-{root.name}-{kill_at}"),
                   "code": code.replace("{root}", str(root))}
        driver.stdin.write(json.dumps(request) + "\n")
        driver.stdin.flush()
        return driver.stdout.readline().strip()

    try:
        clean = root_of(tmp_path / "clean")
        assert run(clean) == "0"
        expected = listing(clean)
        assert not [p for p in expected if "partial" in p or "lock" in p]
        k, root, left = 1, root_of(tmp_path / "killed"), set()
        while True:
            root = root if one_folder else root_of(tmp_path / f"killed-{k}")
            status = run(root, k)
            if status != "killed":
                assert status == "0" and listing(root) == expected
                return k - 1
            partial = {p for p in listing(root) if ".partial" in p}
            assert partial and not partial & left, f"write {k}: no temporary, or an older run's"
            left = partial
            if not one_folder:
                assert run(root) == "0"
                assert listing(root) == expected, f"killed at write {k}, then run again"
            k += 1
    finally:
        driver.stdin.close()
        driver.wait(timeout=60)


def project_with_lab(folder, tiny_net):
    from conftest import write_tiny_lab

    write_tiny_lab(folder, tiny_net)
    return folder


def test_prune_killed_at_each_write(tiny_net, tmp_path):
    code = ("sys.exit(cli.main(['prune', '{root}/models/bd_net.h5', '{root}/data/cl/valid.h5', "
            "'--drops', '2']))")
    writes = kill_at_each_write(tmp_path, code, lambda f: project_with_lab(f, tiny_net), one_folder=True)
    assert writes == 6  # sweep.csv, B' and its record: each made, then placed


def test_fine_prune_killed_at_each_write(tiny_net, tmp_path):
    code = ("sys.exit(cli.main(['fine-prune', '{root}/models/bd_net.h5', '{root}/data/cl/valid.h5', "
            "'--drop', '2', '--steps', '4', '--batch-size', '16', '--force']))")
    writes = kill_at_each_write(tmp_path, code, lambda f: project_with_lab(f, tiny_net), one_folder=True)
    assert writes == 4  # the model and its record


SMALL = {"num_classes": 5, "per_person": {"train": 4, "valid": 9, "test": 10}}


def test_demo_killed_at_each_write(tmp_path):
    models = tmp_path / "models_source"  # the shipped BadNets, recorded for the small faces
    models.mkdir()
    record = demo.read_record(demo.SHIPPED)
    record["settings"] = demo.settings(0, **SMALL)
    (models / demo.RECORD).write_text(json.dumps(record))
    for file in DEMO_BADNETS.values():
        (models / file).write_bytes((demo.SHIPPED / file).read_bytes())
    code = (f"from labkit import demo; demo.build_demo('{{root}}', force=True, progress=False, "
            f"models='{models}', **{SMALL!r})")
    writes = kill_at_each_write(tmp_path, code, lambda f: f)
    assert writes == 2 * (len(demo.data_files()) + 1 + len(DEMO_BADNETS))  # each made, then placed:
    # the clean and the students' poisoned data files, their manifest, the BadNets


# --- run-all: its kernels write too -------------------------------------------------------------

def tiny_project(root, *cells) -> Path:
    """A project whose one notebook starts as the lab's do and writes into models/ and report/."""
    notebook(root / "notebooks" / "01_a.ipynb", "from labkit import files, notebook\n"
                  "lab = notebook.start(dataset)", *cells,
                  'files.write_json(lab.repaired_dir / "run.json", {"ran": dataset})\n'
                  'with files.atomic_path(lab.report_dir / "report.md") as tmp:\n'
                  '    tmp.write_text("# Report\\n\\nIt ran.\\n")')
    for rel in COURSE_FILES:  # notebook.start checks they are there (never read here)
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x")
    return root


def run_all(root, **env):
    return subprocess.Popen([sys.executable, "-m", "labkit", "run-all", "--dataset", "lab"],
                            env={**ENV, "LABKIT_HOME": str(root), **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_run_all_killed_at_each_write(tmp_path):
    hook = tmp_path / "hook"  # every Python of the run (run-all, its kernel) loads the kill hook
    hook.mkdir()
    (hook / "sitecustomize.py").write_text("import killhook\n")
    clean = tiny_project(tmp_path / "clean")
    assert run_all(clean).wait() == 0
    expected = listing(clean)
    assert "report/lab/report.pdf" in expected and "models/repaired/run.json" in expected
    root, k, left = tiny_project(tmp_path / "killed"), 1, set()
    while True:  # each run killed one write later than the last, in the same project (as above)
        proc = run_all(root, KILL_AT=str(k), KILL_COUNTER=str(tmp_path / f"count-{k}"),
                       PYTHONPATH=os.pathsep.join([str(hook), ENV["PYTHONPATH"]]))
        if proc.wait(timeout=300) != -signal.SIGKILL:
            assert proc.returncode == 0, proc.stderr.read()
            break
        time.sleep(0.5)  # the kernel that killed its run-all kills itself
        partial = {p for p in listing(root) if ".partial" in p}
        assert partial and not partial & left, f"write {k}: no temporary, or an older run's"
        left, k = partial, k + 1
    assert listing(root) == expected
    assert k - 1 == 8  # report.md and run.json in the kernel, the HTML page and the PDF


# --- the run lock -------------------------------------------------------------------------------

def test_two_run_alls_at_once_leave_one_whole_report(tmp_path):
    root = tiny_project(tmp_path / "project", "import time\ntime.sleep(4)")
    first = run_all(root)
    lock = root / files.LOCK
    for _ in range(600):  # until the first holds the lock (its kernel is starting)
        if lock.exists() and "run-all" in lock.read_text():
            break
        time.sleep(0.05)
    second = run_all(root)
    assert second.wait(timeout=300) == 2
    check_refusal(2, second.stderr.read(), f"another labkit run is using this project "
                                            f"(labkit run-all --dataset lab (pid {first.pid}))")
    assert first.wait(timeout=300) == 0, first.stderr.read()
    report = root / "report" / "lab"
    assert sorted(p.name for p in report.iterdir()) == ["01_a.html", "01_a.ipynb", "report.md",
                                                          "report.pdf"]
    assert not lock.exists()


HOLD = textwrap.dedent("""
    import sys, time
    from labkit import notebook
    notebook.start("lab")
    print("holding", flush=True)
    time.sleep(120)
""")


def test_a_notebook_kernel_and_run_all_refuse_each_other_and_a_dead_holder_blocks_nothing(tmp_path):
    root = tiny_project(tmp_path / "project")
    kernel = subprocess.Popen([sys.executable, "-c", HOLD], env={**ENV, "LABKIT_HOME": str(root)},
                              stdout=subprocess.PIPE, text=True)
    try:
        assert kernel.stdout.readlines(1) and kernel.stdout.readline() == "holding\n"
        refusal = run_all(root)
        assert refusal.wait(timeout=300) == 2
        check_refusal(2, refusal.stderr.read(), f"a notebook's kernel (dataset='lab') (pid {kernel.pid})")
        assert list((root / "report" / "lab").iterdir()) == []  # made by start(), left alone
    finally:
        kernel.send_signal(signal.SIGKILL)  # a kernel killed, never released by labkit
        kernel.wait()
    assert run_all(root).wait(timeout=300) == 0  # the kernel released the dead holder's lock
    with files.project_lock(root, "labkit run-all --dataset lab", exclusive=True):
        start = subprocess.run([sys.executable, "-c", "from labkit import notebook; notebook.start('lab')"],
                               env={**ENV, "LABKIT_HOME": str(root)}, capture_output=True, text=True)
        assert f"labkit run-all --dataset lab (pid {os.getpid()})" in start.stderr.splitlines()[-1]
        with files.project_lock(root, "run-all's own demo build"):  # nested in one process
            pass
        assert (root / files.LOCK).exists()
    assert not (root / files.LOCK).exists()


def test_a_stale_temporary_is_removed_and_a_live_one_kept(tmp_path):
    with files.atomic_path(tmp_path / "live.h5") as live:  # this run is alive: its lock is held
        dead = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
            import os, signal
            from labkit import files
            with files.atomic_path({str(tmp_path / 'out.h5')!r}) as tmp:
                print(tmp.name, flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
            """)], env=ENV, capture_output=True, text=True).stdout.strip()
        assert (tmp_path / dead).exists()
        stale_folder = tmp_path / ".course.abcd1234.partial"  # a whole output folder, lock gone
        (stale_folder / "source").mkdir(parents=True)
        removed = files.sweep(tmp_path)
        assert {p.name for p in removed} == {dead, stale_folder.name}
        assert live.exists() and not (tmp_path / dead).exists()
        with h5py.File(live, "w") as f:  # HDF5's own file lock does not clash with labkit's
            f["x"] = [1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["live.h5"]
