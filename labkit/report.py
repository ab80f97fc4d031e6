"""The whole lab in one go (`labkit run-all`) and its report as a PDF.

`run_all` runs the numbered notebooks top to bottom with papermill and keeps, in
report/<dataset>/, each executed notebook, an HTML page of it, and report.pdf made by
`write_pdf` from the report.md the notebooks write there (markdown-it-py makes HTML, fpdf2 lays
it out with the DejaVu fonts that matplotlib ships: no LaTeX, no browser).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from .data import lab, project_root
from .errors import LabError, one_line
from .files import LOCKED_BY, atomic_path, check_outputs, project_lock

NOTEBOOKS = "[0-9][0-9]_*.ipynb"  # 01_evaluate.ipynb ... 06_unknown_trigger.ipynb, in this order


def run_all(dataset: str = "demo", root: Path | str | None = None, progress: bool = True,
            parameters: dict | None = None) -> Path:
    """Run notebooks 01..06 on `dataset`; return report/<dataset>/, which holds the results.

    `parameters` go to every notebook as papermill's -p does (e.g. {"steps": 12}, for a quick run).

    The demo lab is built first if it is not there yet. Files of an earlier run of the same
    dataset are removed first; nothing outside report/<dataset>/ is. The project is locked for
    the run (`files.project_lock`): while another run-all, a notebook's kernel or a command
    writes there, this run is refused, and they are refused while it runs.
    """
    root = Path(root).resolve() if root is not None else project_root()
    out = lab(dataset, root).report_dir
    notebooks = sorted((root / "notebooks").glob(NOTEBOOKS))
    if not notebooks:
        raise LabError(f"{root / 'notebooks'}: no numbered notebooks (01_*.ipynb, ...) found; "
                       "run this in the labkit folder or set LABKIT_HOME to it")
    with project_lock(root, f"labkit run-all --dataset {dataset}", exclusive=True):
        _run(notebooks, root, {**(parameters or {}), "dataset": dataset}, out, progress)
    return out


def _run(notebooks: list, root: Path, parameters: dict, out: Path, progress: bool) -> None:
    from tqdm.auto import tqdm

    check_outputs([out / "report.pdf", *(out / n.name for n in notebooks)], within=root)  # first
    dataset = parameters["dataset"]
    if dataset == "lab":
        from .notebook import check_course_files

        check_course_files(lab(dataset, root))  # here, not in 01's kernel some seconds later
    if dataset == "demo":
        from .demo import build_demo

        build_demo(root=root, progress=progress)
    out.mkdir(parents=True, exist_ok=True)
    for old in [*out.iterdir(), *out.glob("cache/*")]:  # the cache too: it is per run
        if old.is_file() or old.is_symlink():
            old.unlink()
    with tqdm(notebooks, desc="notebooks", unit="notebook", disable=not progress) as bar:
        for notebook in bar:
            bar.set_postfix_str(notebook.name)
            executed = out / notebook.name
            _execute(notebook, executed, parameters, root)
            _write_html(executed, executed.with_suffix(".html"))
    if (out / "report.md").is_file():
        write_pdf(out / "report.md", out / "report.pdf")


def durations(out: Path) -> dict:
    """{notebook name: seconds} of the notebooks executed in `out`, as papermill recorded them."""
    import nbformat

    found = {}
    for path in sorted(out.glob(NOTEBOOKS)):
        seconds = nbformat.read(path, as_version=4).metadata.get("papermill", {}).get("duration")
        if seconds is not None:
            found[path.name] = seconds
    return found


def _execute(notebook: Path, executed: Path, parameters: dict, root: Path) -> None:
    """Run one notebook in a kernel of this very Python; papermill writes it as it goes."""
    import papermill
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    try:
        papermill.execute_notebook(
            str(notebook), str(executed), parameters=parameters, cwd=str(notebook.parent),
            kernel_name="python3", kernel_manager_class=_kernel_manager(root), progress_bar=False)
    except papermill.PapermillExecutionError as err:
        cell = err.exec_count if err.exec_count is not None else err.cell_index
        raise LabError(f"{notebook.name} failed in cell [{cell}] ({err.ename}: "
                       f"{one_line(err.evalue)}); the partly run notebook is {executed}") from None
    except (DeadKernelError, CellTimeoutError, RuntimeError) as err:  # died or never started
        raise LabError(f"{notebook.name}: the Python kernel stopped ({one_line(err)}); the partly "
                       f"run notebook is {executed}; free some memory and run again") from None


def _kernel_manager(root: Path):
    """A kernel manager starting ipykernel with this Python (sys.executable), never another one.

    The name "python3" can point to another environment's Python (a kernel installed with
    --user); the notebooks must run with the labkit of the caller. LABKIT_HOME tells the
    kernel which project folder to use, LOCKED_BY that its parent holds the project's lock.
    """
    from ipykernel.kernelspec import get_kernel_dict
    from jupyter_client.kernelspec import KernelSpec
    from jupyter_client.manager import KernelManager

    # the kernel's own log (start-up warnings) would break into the progress bar; the
    # notebooks' output and errors go to the executed notebook, not there
    quiet = ["--IPKernelApp.log_level=ERROR"]
    spec = KernelSpec(**get_kernel_dict(extra_arguments=quiet), env={"LABKIT_HOME": str(root),
                                                                      LOCKED_BY: str(os.getpid())})
    return type("SameEnvKernelManager", (KernelManager,), {"kernel_spec": property(lambda _: spec)})


def _write_html(notebook: Path, html: Path) -> None:
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_filename(str(notebook))
    with atomic_path(html) as tmp:
        tmp.write_text(body, encoding="utf-8")


# --- report.md -> report.pdf ----------------------------------------------------------------

FONT, MONO = "DejaVu", "DejaVuMono"
TEXT_SIZE = 10  # points
MAX_FIGURE_HEIGHT = 120  # millimetres: a tall figure is scaled down to this
CELL_PADDING = 5  # millimetres a table column needs beside its text
FIGURE = "<!-- figure -->"  # where a figure goes in the HTML
_NUMBER = re.compile(r"[-+−]?\d[\d.,]*\s?%?|")  # a table cell holding a number (or nothing)


def write_pdf(markdown_path: Path | str, pdf_path: Path | str) -> Path:
    """Render a markdown report (CommonMark with pipe tables) to an A4 PDF.

    Figures `![caption](file.png)` are read relative to the markdown file, fitted to the page and
    captioned; table columns are sized so that no word is split.
    """
    import matplotlib
    from fpdf import FPDF, FontFace, TextStyle
    from markdown_it import MarkdownIt

    markdown_path, pdf_path = Path(markdown_path), Path(pdf_path)
    try:
        text = markdown_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise LabError(f"{markdown_path}: cannot read the report ({one_line(err)})") from None

    class Report(FPDF):
        def footer(self):
            self.set_y(-12)
            self.set_font(FONT, "", 8)
            self.cell(0, 5, f"{markdown_path.name}  ·  page {self.page_no()}/{{nb}}", align="C")

    pdf = Report(format="A4")
    pdf.set_margins(18, 18, 18)
    fonts = Path(matplotlib.get_data_path()) / "fonts" / "ttf"  # DejaVu, shipped by matplotlib
    for family, stem in ((FONT, "DejaVuSans"), (MONO, "DejaVuSansMono")):
        for style, suffix in (("", ""), ("B", "-Bold"), ("I", "-Oblique"), ("BI", "-BoldOblique")):
            pdf.add_font(family, style, str(fonts / f"{stem}{suffix}.ttf"))
    pdf.set_font(FONT, "", TEXT_SIZE)
    pdf.add_page()
    md = MarkdownIt("commonmark", {"html": False}).enable("table")  # HTML in the text stays text
    tokens = md.parse(text)
    figures = _take_figures(tokens, markdown_path)
    _size_tables(tokens, pdf)
    styles = {"code": FontFace(family=MONO, color=(150, 30, 30)),
              "pre": TextStyle(font_family=MONO, font_size_pt=9, t_margin=2),
              **{f"h{n}": TextStyle(font_style="B", font_size_pt=size, t_margin=4, b_margin=1.5,
                                    color=30) for n, size in ((1, 17), (2, 13.5), (3, 11.5))}}
    # fpdf2 lays out HTML text lazily, so figures are drawn between separate write_html calls
    for i, part in enumerate(md.renderer.render(tokens, md.options, {}).split(FIGURE)):
        pdf.write_html(part, font_family=FONT, tag_styles=styles)
        if i < len(figures):
            _figure(pdf, *figures[i])
    with atomic_path(pdf_path) as tmp:
        pdf.output(str(tmp))
    return pdf_path


def _take_figures(tokens, source: Path) -> list:
    """Replace each figure on a line of its own by a marker; return (path, caption, height/width)."""
    from PIL import Image

    figures = []
    for i in range(len(tokens) - 2):
        images = [t for t in tokens[i + 1].children or () if t.type != "text" or t.content.strip()]
        if tokens[i].type != "paragraph_open" or [t.type for t in images] != ["image"]:
            continue
        path = source.parent / images[0].attrGet("src")
        try:
            with Image.open(path) as im:
                figures.append((path, images[0].content, im.height / im.width))
        except (OSError, ValueError) as err:
            raise LabError(f"{source}: figure {images[0].attrGet('src')} cannot be read "
                           f"({one_line(err)}); the notebook must save it to {source.parent}/ "
                           "before writing the report") from None
        tokens[i:i + 3] = [type(tokens[i])("html_block", "", 0, content=FIGURE)] + [
            type(tokens[i])("text", "", 0)] * 2  # same length: the loop's indices stay valid
    return figures


def _figure(pdf, path: Path, caption: str, ratio: float) -> None:
    """A figure fitted to the page width (and MAX_FIGURE_HEIGHT), centred, its caption below."""
    w = min(pdf.epw, MAX_FIGURE_HEIGHT / ratio)
    if pdf.will_page_break(w * ratio + 12):
        pdf.add_page()
    pdf.ln(3)
    pdf.image(str(path), x="C", w=w)
    pdf.set_font(FONT, "I", 9)
    pdf.multi_cell(0, 5, caption, align="C", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)


def _size_tables(tokens, pdf) -> None:
    """Size each table's columns (percent, on its header cells): each gets its longest word,
    and what is left of the page in proportion to the rest of its text."""
    for i, token in enumerate(tokens):
        if token.type in ("th_open", "td_open") and "text-align" in (token.attrGet("style") or ""):
            token.attrSet("align", token.attrs.pop("style").split(":")[1])  # fpdf2 reads align
        if token.type != "table_open":
            continue
        end = next(j for j in range(i, len(tokens)) if tokens[j].type == "table_close")
        heads = [t for t in tokens[i:end] if t.type == "th_open"]
        longest, wanted = [0.0] * len(heads), [0.0] * len(heads)
        cells = [[] for _ in heads]
        for j in range(i, end):
            if tokens[j].type == "tr_open":
                column = 0
            elif tokens[j].type in ("th_open", "td_open") and column < len(heads):
                pdf.set_font(FONT, "B" if tokens[j].type == "th_open" else "", TEXT_SIZE)
                text = tokens[j + 1].content
                words = [pdf.get_string_width(w) for w in text.split()] or [0]
                longest[column] = max(longest[column], max(words) + CELL_PADDING)
                wanted[column] = max(wanted[column], pdf.get_string_width(text) + CELL_PADDING)
                cells[column].append((tokens[j], text))
                column += 1
        for column in cells:  # numbers right, text left, unless the markdown says otherwise
            numbers = all(_NUMBER.fullmatch(text) for t, text in column if t.type == "td_open")
            for t, _ in column:
                if not t.attrGet("align"):
                    t.attrSet("align", "right" if numbers else "left")
        if sum(wanted) > pdf.epw:  # too wide: each column its longest word, the rest shared
            spare, extra = max(pdf.epw - sum(longest), 0), [w - n for w, n in zip(wanted, longest)]
            wanted = [n + spare * e / (sum(extra) or 1) for n, e in zip(longest, extra)]
        token.attrSet("width", f"{min(100, 100 * sum(wanted) / pdf.epw):.1f}%")
        for head, width in zip(heads, wanted):
            head.attrSet("width", f"{width:.2f}")  # relative: fpdf2 scales them to the table
