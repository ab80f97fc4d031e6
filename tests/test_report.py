"""`labkit run-all` and the PDF report: the markdown the notebooks write, rendered and readable."""
import json
import sys

import matplotlib
import nbformat
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from labkit import cli  # noqa: E402
from hostile import forbid  # noqa: E402
from labkit.errors import LabError  # noqa: E402
from labkit.notebook import COURSE_FILES  # noqa: E402
from labkit.report import durations, run_all, write_pdf  # noqa: E402

REPORT = """# Backdoor report — demo

The BadNet `bd_net.h5` keeps **98.6 %** clean accuracy;
*pruning* → ASR ≥ 2–3 % isn’t 0 · yet.

## Results

- clean accuracy: **98.64**
- attack success rate: `100.00`

| model | clean accuracy (%) | attack success rate (%) |
|---|---|---:|
| B | 98.64 | 100.00 |
| GoodNet G | 92.29 | 1.25 |

![Accuracy as channels are pruned](figure.png)

### Remarks

1. first remark
2. second remark

#5, |x| and <b>tags</b> are text.

| X (validation accuracy drop, pp) | channels pruned | B' validation accuracy (%) | B' test accuracy (%) | B' attack success rate (%) | G clean test accuracy (%) | G attack success rate (%) | clean faces flagged (%) |
|---|---|---|---|---|---|---|---|
| 2 | 20 | 97.10 | 97.20 | 100.00 | 96.90 | 100.00 | 2.30 |

![Second figure, tall](tall.png)
"""
TABLE_WORDS = {w for line in REPORT.splitlines() if line.startswith("| ") for w in line.split()} - {"|"}


def pdf_pages(path):
    """Each page's text and number of images, as a PDF reader sees them."""
    from pypdf import PdfReader

    return [(page.extract_text(), len(page.images)) for page in PdfReader(path).pages]


@pytest.fixture
def report_md(tmp_path):
    for name, size in (("figure", (6, 3)), ("tall", (4, 8))):
        fig, ax = plt.subplots(figsize=size)
        ax.plot([0, 50, 100], [98, 95, 80])
        fig.savefig(tmp_path / f"{name}.png", dpi=80)
        plt.close(fig)
    path = tmp_path / "report.md"
    path.write_text(REPORT, encoding="utf-8")
    return path


def test_write_pdf_renders_every_construct(report_md, tmp_path):
    pdf = write_pdf(report_md, tmp_path / "out" / "report.pdf")
    pages = pdf_pages(pdf)
    text = "\n".join(t for t, _ in pages)
    assert sum(n for _, n in pages) == 2  # each figure
    flat = " ".join(text.split())
    for shown in ("Backdoor report — demo", "pruning → ASR ≥ 2–3 % isn’t 0 · yet", "bd_net.h5",
                  "clean accuracy: 98.64", "GoodNet G", "92.29", "Accuracy as channels are pruned",
                  "first remark", "attack success rate: 100.00", "#5, |x| and <b>tags</b> are text.",
                  "Second figure, tall", f"page {len(pages)}/{len(pages)}"):
        assert shown in flat, shown
    for markup in ("**", "`", "| model", "|---", "!["):  # rendered, not shown
        assert markup not in text
    missing = TABLE_WORDS - set(text.split())
    assert not missing, f"table words broken or lost: {missing}"
    assert list(tmp_path.joinpath("out").iterdir()) == [pdf]  # no temporary file left behind


def test_write_pdf_missing_figure_names_it(report_md, tmp_path):
    (tmp_path / "figure.png").unlink()
    with pytest.raises(LabError, match=r"report\.md: figure figure\.png cannot be read") as err:
        write_pdf(report_md, tmp_path / "report.pdf")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "report.pdf").exists()


def notebook(path, *cells):
    """A notebook whose first cell is papermill's `parameters` cell."""
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {
        "name": "python3", "display_name": "Python 3", "language": "python"}})
    nb.cells = [nbformat.v4.new_code_cell('dataset = "demo"', metadata={"tags": ["parameters"]})]
    nb.cells += [nbformat.v4.new_code_cell(c) for c in cells]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


OUT = 'import os, pathlib, sys\nout = pathlib.Path(os.environ["LABKIT_HOME"], "report", dataset)'


@pytest.fixture
def project(tmp_path):
    root = tmp_path / "project"
    notebook(root / "notebooks" / "01_a.ipynb", OUT,
             'out.joinpath("python.txt").write_text(sys.executable)\nprint("ran on", dataset)',
             "import labkit\nimport tensorflow as tf\ntf.constant(1.0) + 1")
    notebook(root / "notebooks" / "02_b.ipynb", OUT,
             'out.joinpath("report.md").write_text(f"# Report\\n\\nDataset **{dataset}**.\\n")')
    notebook(root / "notebooks" / "index.ipynb", "raise RuntimeError('index is not run')")
    for rel in COURSE_FILES:  # dataset "lab" needs the course's files there (not read here)
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).touch()
    return root


def test_run_all_on_the_lab_names_missing_course_files_before_any_kernel(project, monkeypatch):
    from labkit import report

    forbid(monkeypatch, report, "_execute", "a notebook ran")
    (project / COURSE_FILES[-1]).unlink()
    with pytest.raises(LabError, match=f"{project / COURSE_FILES[-1]}: 1 of the course's"):
        run_all("lab", root=project, progress=False)
    assert not (project / "report").exists()


def test_run_all_writes_notebooks_html_and_pdf(project, monkeypatch, tmp_path, capfd):
    stale = project / "report" / "lab" / "old_figure.png"
    stale.parent.mkdir(parents=True)
    stale.write_text("from an earlier run")
    other = project / "report" / "demo" / "keep.png"
    other.parent.mkdir(parents=True)
    other.write_text("another dataset's report")
    monkeypatch.chdir(tmp_path)
    out = run_all("lab", root=project, progress=False)
    assert out == project / "report" / "lab"
    assert sorted(p.name for p in out.iterdir()) == [
        "01_a.html", "01_a.ipynb", "02_b.html", "02_b.ipynb", "python.txt", "report.md",
        "report.pdf"]
    assert (out / "python.txt").read_text() == sys.executable  # the caller's Python ran them
    executed = nbformat.read(out / "01_a.ipynb", as_version=4)
    assert "ran on lab" in str(executed.cells)  # papermill passed the dataset
    assert "ran on lab" in (out / "01_a.html").read_text()
    printed = "".join(capfd.readouterr())  # the kernels' own output comes here
    for noise in ("absl", "oneDNN", "cuda", "WARNING"):  # TensorFlow started quietly
        assert noise not in str(executed.cells) and noise not in printed, noise
    assert (out / "report.pdf").read_bytes().startswith(b"%PDF-")
    assert other.exists()


def test_run_all_demo_builds_the_demo_first_and_prints_the_times(project, monkeypatch, tmp_path,
                                                                 capsys):
    from labkit import demo

    # a kernel named python3 of another Python (installed with --user, say) is not used
    other = tmp_path / "jupyter" / "kernels" / "python3" / "kernel.json"
    other.parent.mkdir(parents=True)
    other.write_text(json.dumps({"argv": ["/nonexistent/python", "-m", "ipykernel_launcher", "-f",
                                          "{connection_file}"], "display_name": "other",
                                 "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    calls = []
    monkeypatch.setattr(demo, "build_demo", lambda **kw: calls.append(kw), raising=False)
    monkeypatch.setenv("LABKIT_HOME", str(project))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run-all"]) == 0
    assert calls == [{"root": project, "progress": True}]
    out = project / "report" / "demo"
    assert (out / "report.pdf").is_file()
    times = durations(out)  # papermill's, per notebook, in the order they ran
    assert list(times) == ["01_a.ipynb", "02_b.ipynb"] and all(t > 0 for t in times.values())
    printed = capsys.readouterr().out
    assert (f"01_a.ipynb {times['01_a.ipynb']:.1f} s, 02_b.ipynb {times['02_b.ipynb']:.1f} s; "
            f"{sum(times.values()):.1f} s in all") in printed


def test_run_all_failing_notebook_is_one_line(project, capfd, monkeypatch):
    notebook(project / "notebooks" / "02_b.ipynb", "x = 1", "raise ValueError('the data is odd')")
    with pytest.raises(LabError) as err:
        run_all("lab", root=project, progress=False)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("02_b.ipynb failed in cell [4] (ValueError: the data is odd)")
    partial = project / "report" / "lab" / "02_b.ipynb"
    assert message.endswith(str(partial)) and partial.is_file()
    monkeypatch.setenv("LABKIT_HOME", str(project))
    assert cli.main(["run-all", "--dataset", "lab"]) == 2
    err = capfd.readouterr().err
    assert err.splitlines()[-1].startswith("labkit: error: 02_b.ipynb failed in cell [4]")
    assert "WARNING" not in err and "Traceback" not in err  # the kernel's log stays quiet


def test_run_all_refuses_a_report_folder_that_is_a_file_before_building_anything(project, monkeypatch):
    from labkit import demo

    (project / "report").mkdir()
    (project / "report" / "demo").write_text("a file where the report folder goes")
    built = []
    monkeypatch.setattr(demo, "build_demo", lambda **kw: built.append(kw), raising=False)
    with pytest.raises(LabError, match="is a file"):
        run_all("demo", root=project, progress=False)
    assert not built and (project / "report" / "demo").read_text().startswith("a file")
