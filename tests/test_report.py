"""`labkit run-all` and the PDF report: the markdown the notebooks write, rendered and readable."""
import json
import re
import sys
import zlib

import matplotlib
import nbformat
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from labkit import cli  # noqa: E402
from labkit.errors import LabError  # noqa: E402
from labkit.report import run_all, write_pdf  # noqa: E402

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

#5 and |x| are text.
"""


def pdf_text(path) -> str:
    """The text a PDF viewer shows, decoded through the fonts' ToUnicode maps (no extra library)."""
    data = path.read_bytes()
    objects = {int(n): body for n, body in re.findall(rb"(\d+) 0 obj(.*?)endobj", data, re.S)}

    def stream(body):
        raw = re.search(rb"stream\r?\n(.*?)\r?\nendstream", body, re.S).group(1)
        return zlib.decompress(raw) if b"FlateDecode" in body else raw

    def cmap(n):
        out = {}
        text = stream(objects[n])
        for block in re.findall(rb"beginbfchar(.*?)endbfchar", text, re.S):
            for src, dst in re.findall(rb"<([0-9A-Fa-f]+)>\s*<([0-9A-Fa-f]+)>", block):
                out[int(src, 16)] = bytes.fromhex(dst.decode()).decode("utf-16-be")
        for block in re.findall(rb"beginbfrange(.*?)endbfrange", text, re.S):
            for a, b, dst in re.findall(rb"<(\w+)>\s*<(\w+)>\s*<(\w+)>", block):
                for k in range(int(a, 16), int(b, 16) + 1):
                    out[k] = chr(int(dst, 16) + k - int(a, 16))
        return out

    fonts = {}
    for name, n in re.findall(rb"/(F\d+) (\d+) 0 R", data):
        unicode = re.search(rb"/ToUnicode (\d+) 0 R", objects[int(n)])
        fonts[name] = cmap(int(unicode.group(1))) if unicode else {}
    escapes = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"b": b"\b", b"f": b"\f"}
    text = []
    for n in re.findall(rb"/Contents (\d+) 0 R", data):  # each page's drawing operations
        content, font = stream(objects[int(n)]), {}
        ops = re.findall(rb"/(F\d+) [\d.]+ Tf|\(((?:\\.|[^\\)])*)\)", content, re.S)
        for switch, literal in ops:
            if switch:
                font = fonts.get(switch, {})
                continue
            raw = re.sub(rb"\\([0-7]{1,3}|.)", lambda m: escapes.get(m.group(1)) or (
                bytes([int(m.group(1), 8)]) if m.group(1)[:1].isdigit() else m.group(1)),
                literal, flags=re.S)
            text.append("".join(font.get(int.from_bytes(raw[i:i + 2], "big"), "?")
                                for i in range(0, len(raw) - 1, 2)))
        text.append("\n")
    return "".join(text)


@pytest.fixture
def report_md(tmp_path):
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot([0, 50, 100], [98, 95, 80])
    fig.savefig(tmp_path / "figure.png", dpi=80)
    plt.close(fig)
    path = tmp_path / "report.md"
    path.write_text(REPORT, encoding="utf-8")
    return path


def test_write_pdf_renders_every_construct(report_md, tmp_path):
    pdf = write_pdf(report_md, tmp_path / "out" / "report.pdf")
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF-") and data.rstrip().endswith(b"%%EOF")
    assert len(re.findall(rb"/Type /Page\b(?!s)", data)) == 1
    assert data.count(b"/Subtype /Image") == 1  # the figure
    for heading in (b"Results", b"Remarks"):  # headings are bookmarks too
        assert b"/Title (" + heading + b")" in data
    text = pdf_text(pdf)
    for shown in ("Backdoor report — demo", "pruning → ASR ≥ 2–3 % isn’t 0 · yet", "bd_net.h5",
                  "clean accuracy: 98.64", "GoodNet G", "92.29", "Accuracy as channels are pruned",
                  "1.first remark", "•attack success rate: 100.00", "#5 and |x| are text.",
                  "page 1/1"):
        assert shown in text.replace("\n", ""), shown
    for markup in ("**", "`", "| model", "|---", "!["):  # rendered, not shown
        assert markup not in text
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
             'out.joinpath("python.txt").write_text(sys.executable)\nprint("ran on", dataset)')
    notebook(root / "notebooks" / "02_b.ipynb", OUT,
             'out.joinpath("report.md").write_text(f"# Report\\n\\nDataset **{dataset}**.\\n")')
    notebook(root / "notebooks" / "index.ipynb", "raise RuntimeError('index is not run')")
    return root


def test_run_all_writes_notebooks_html_and_pdf(project, monkeypatch, tmp_path):
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
    assert (out / "report.pdf").read_bytes().startswith(b"%PDF-")
    assert other.exists()


def test_run_all_demo_builds_the_demo_first(project, monkeypatch, tmp_path):
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
    out = run_all("demo", root=project, progress=False)
    assert calls == [{"root": project, "progress": False}]
    assert (out / "report.pdf").is_file()


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
