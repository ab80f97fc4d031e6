"""The whole lab in one go (`labkit run-all`) and its report as a PDF.

`run_all` runs the numbered notebooks top to bottom with papermill and keeps, in
report/<dataset>/, each executed notebook, an HTML page of it, and report.pdf made by
`write_pdf` from the report.md the notebooks write there (fpdf2 with the DejaVu fonts that
matplotlib ships: no LaTeX, no browser).
"""
from __future__ import annotations

import re
from pathlib import Path

from .data import lab, project_root
from .errors import LabError, one_line
from .files import atomic_path

NOTEBOOKS = "[0-9][0-9]_*.ipynb"  # 01_evaluate.ipynb ... 04_analysis.ipynb, in this order


def run_all(dataset: str = "demo", root: Path | str | None = None, progress: bool = True) -> Path:
    """Run notebooks 01..04 on `dataset`; return report/<dataset>/, which holds the results.

    The demo lab is built first if it is not there yet. Files of an earlier run of the same
    dataset are removed first; nothing outside report/<dataset>/ is.
    """
    from tqdm.auto import tqdm

    root = Path(root).resolve() if root is not None else project_root()
    out = lab(dataset, root).report_dir
    notebooks = sorted((root / "notebooks").glob(NOTEBOOKS))
    if not notebooks:
        raise LabError(f"{root / 'notebooks'}: no numbered notebooks (01_*.ipynb, ...) found; "
                       "run this in the labkit folder or set LABKIT_HOME to it")
    if dataset == "demo":
        from .demo import build_demo

        build_demo(root=root, progress=progress)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.iterdir():
        if old.is_file() or old.is_symlink():
            old.unlink()
    with tqdm(notebooks, desc="notebooks", unit="notebook", disable=not progress) as bar:
        for notebook in bar:
            bar.set_postfix_str(notebook.name)
            executed = out / notebook.name
            _execute(notebook, executed, dataset, root)
            _write_html(executed, executed.with_suffix(".html"))
    if (out / "report.md").is_file():
        write_pdf(out / "report.md", out / "report.pdf")
    return out


def _execute(notebook: Path, executed: Path, dataset: str, root: Path) -> None:
    """Run one notebook in a kernel of this very Python; papermill writes it as it goes."""
    import papermill
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    try:
        papermill.execute_notebook(
            str(notebook), str(executed), parameters={"dataset": dataset}, cwd=str(notebook.parent),
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
    kernel which project folder to use.
    """
    from ipykernel.kernelspec import get_kernel_dict
    from jupyter_client.kernelspec import KernelSpec
    from jupyter_client.manager import KernelManager

    # the kernel's own log (start-up warnings) would break into the progress bar; the
    # notebooks' output and errors go to the executed notebook, not there
    quiet = ["--IPKernelApp.log_level=ERROR"]
    spec = KernelSpec(**get_kernel_dict(extra_arguments=quiet), env={"LABKIT_HOME": str(root)})
    return type("SameEnvKernelManager", (KernelManager,), {"kernel_spec": property(lambda _: spec)})


def _write_html(notebook: Path, html: Path) -> None:
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_filename(str(notebook))
    with atomic_path(html) as tmp:
        tmp.write_text(body, encoding="utf-8")


# --- report.md -> report.pdf ----------------------------------------------------------------

FONT, MONO = "DejaVu", "DejaVuMono"
TEXT_SIZE, LINE = 10.5, 5.6  # points, millimetres
HEADINGS = {1: 18, 2: 14, 3: 12}  # level -> points
MAX_FIGURE_HEIGHT = 120  # millimetres: a tall figure is scaled down to this

_INLINE = re.compile(
    r"`(?P<code>[^`]+)`"
    r"|\*\*(?P<bold>.+?)\*\*"
    r"|(?<![\w*])\*(?P<italic>[^*\s](?:[^*]*[^*\s])?)\*(?![\w*])"
    r"|(?<![\w_])_(?P<italic_>[^_\s](?:[^_]*[^_\s])?)_(?![\w_])"
    r"|\[(?P<label>[^\]]+)\]\((?P<url>[^)\s]+)\)")
_IMAGE = re.compile(r"^!\[(?P<caption>[^\]]*)\]\((?P<src>[^)]+)\)$")
_BULLET = re.compile(r"^(?:[-*+]|(?P<number>\d+)[.)])\s+(?P<text>.*)$")
_NUMBER = re.compile(r"^[-+−]?[\d.,\s]*\d[\d.,\s]*(?:%|pp| ?%)?$")


def write_pdf(markdown_path: Path | str, pdf_path: Path | str) -> Path:
    """Render a markdown report to an A4 PDF: headings, paragraphs, lists, tables, figures.

    Supported: `#`..`###` headings, **bold**, *italic*, `code`, [links](url), `-` and `1.`
    lists, pipe tables, fenced code blocks, `---` rules and figures `![caption](file.png)`
    on a line of their own, relative to the markdown file.
    """
    from fpdf import FPDF

    markdown_path, pdf_path = Path(markdown_path), Path(pdf_path)
    try:
        text = markdown_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise LabError(f"{markdown_path}: cannot read the report ({one_line(err)})") from None

    class Report(FPDF):
        def footer(self):
            self.set_y(-12)
            self.set_font(FONT, "", 8)
            self.set_text_color(120)
            self.cell(0, 5, f"{self.title or markdown_path.name}  ·  page {self.page_no()}/{{nb}}",
                      align="C")
            self.set_text_color(0)

    pdf = Report(format="A4", unit="mm")
    pdf.set_margins(18, 18, 18)
    pdf.set_auto_page_break(True, margin=18)
    _add_fonts(pdf)
    pdf.set_creator("labkit")
    first = re.search(r"^#\s+(.+)$", text, re.M)
    if first:
        pdf.set_title(_plain(first.group(1)))
    pdf.add_page()
    for block in _blocks(text.splitlines()):
        _DRAW[block[0]](pdf, *block[1:], folder=markdown_path.parent, source=markdown_path)
    with atomic_path(pdf_path) as tmp:
        pdf.output(str(tmp))
    return pdf_path


def _add_fonts(pdf) -> None:
    import matplotlib

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    for family, stem in ((FONT, "DejaVuSans"), (MONO, "DejaVuSansMono")):
        for style, suffix in (("", ""), ("B", "-Bold"), ("I", "-Oblique"), ("BI", "-BoldOblique")):
            pdf.add_font(family, style, str(folder / f"{stem}{suffix}.ttf"))


def _blocks(lines: list[str]):
    """Split markdown lines into blocks: (kind, ...) tuples in reading order."""
    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        stripped = line.strip()
        if not stripped:
            i += 1
        elif stripped.startswith("```"):
            end = next((j for j in range(i + 1, len(lines)) if lines[j].strip().startswith("```")),
                       len(lines))
            yield "code", "\n".join(lines[i + 1:end])
            i = end + 1
        elif m := re.match(r"^(#{1,6})\s+(.*?)\s*#*$", stripped):
            yield "heading", min(len(m.group(1)), 3), m.group(2)
            i += 1
        elif re.fullmatch(r"(-{3,}|\*{3,}|_{3,})", stripped):
            yield "rule",
            i += 1
        elif m := _IMAGE.match(stripped):
            yield "image", m.group("caption"), m.group("src").strip()
            i += 1
        elif stripped.startswith("|") and i + 1 < len(lines) and _is_separator(lines[i + 1]):
            rows, aligns = [_cells(line)], _aligns(lines[i + 1])
            i += 2
            while i < len(lines) and lines[i].strip().startswith("|"):
                rows.append(_cells(lines[i]))
                i += 1
            yield "table", rows, aligns
        elif _BULLET.match(stripped):
            items, ordered = [], bool(_BULLET.match(stripped).group("number"))
            while i < len(lines) and lines[i].strip():
                m = _BULLET.match(lines[i].strip())
                if m:
                    items.append(m.group("text"))
                elif items and lines[i][:1].isspace():
                    items[-1] += " " + lines[i].strip()  # an item continued on the next line
                else:
                    break
                i += 1
            yield "bullets", items, ordered
        else:
            para, i = [stripped], i + 1
            while i < len(lines) and lines[i].strip() and not _starts_block(lines, i):
                para.append(lines[i].strip())
                i += 1
            yield "paragraph", " ".join(para)


def _starts_block(lines: list[str], i: int) -> bool:
    s = lines[i].strip()
    return bool(s.startswith(("#", "```", "|")) or _IMAGE.match(s) or _BULLET.match(s)
                or re.fullmatch(r"(-{3,}|\*{3,}|_{3,})", s))


def _cells(line: str) -> list[str]:
    line = line.strip().strip("|")
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)]


def _is_separator(line: str) -> bool:
    return bool(re.fullmatch(r"\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?", line.strip()))


def _aligns(line: str) -> list[str | None]:
    out = []
    for c in _cells(line):
        left, right = c.startswith(":"), c.endswith(":")
        out.append("C" if left and right else "R" if right else "L" if left else None)
    return out


def _runs(text: str, style: str = ""):
    """Inline markdown as (style, text, link) runs; style holds B, I, or C for code."""
    pos = 0
    for m in _INLINE.finditer(text):
        if m.start() > pos:
            yield style, text[pos:m.start()], ""
        if m.group("code") is not None:
            yield "C", m.group("code"), ""
        elif m.group("bold") is not None:
            yield from _runs(m.group("bold"), "".join(sorted(set(style + "B"))))
        elif m.group("italic") or m.group("italic_"):
            yield from _runs(m.group("italic") or m.group("italic_"),
                             "".join(sorted(set(style + "I"))))
        else:
            yield style, m.group("label"), m.group("url")
        pos = m.end()
    if pos < len(text):
        yield style, text[pos:], ""


def _plain(text: str) -> str:
    return "".join(part for _, part, _ in _runs(text))


def _write(pdf, text: str, size: float = TEXT_SIZE, height: float = LINE, style: str = "") -> None:
    """Write inline markdown from the current position, wrapping at the margins."""
    for run_style, part, link in _runs(text, style):
        if run_style == "C":
            pdf.set_font(MONO, "", size * 0.9)
            pdf.set_text_color(150, 30, 30)
        else:
            pdf.set_font(FONT, run_style, size)
            pdf.set_text_color(*((20, 70, 170) if link else (0, 0, 0)))
        pdf.write(height, part, link)
    pdf.set_text_color(0)
    pdf.ln(height)


def _heading(pdf, level: int, text: str, **_) -> None:
    size = HEADINGS[level]
    if pdf.will_page_break(size + 25):
        pdf.add_page()
    elif pdf.get_y() > pdf.t_margin + 1:
        pdf.ln(size * 0.45)
    pdf.start_section(_plain(text), level - 1, strict=False)
    _write(pdf, text, size, size * 0.5, "B")
    if level == 1:
        pdf.set_draw_color(150)
        pdf.line(pdf.l_margin, pdf.get_y() + 1, pdf.w - pdf.r_margin, pdf.get_y() + 1)
        pdf.set_draw_color(0)
        pdf.ln(3)
    pdf.ln(1.5)


def _paragraph(pdf, text: str, **_) -> None:
    _write(pdf, text)
    pdf.ln(2.5)


def _bullets(pdf, items: list[str], ordered: bool, **_) -> None:
    left = pdf.l_margin
    for n, item in enumerate(items, 1):
        pdf.set_font(FONT, "", TEXT_SIZE)
        pdf.set_x(left + 2)
        pdf.cell(6, LINE, f"{n}." if ordered else "•")
        pdf.set_left_margin(left + 8)
        _write(pdf, item)
        pdf.set_left_margin(left)
        pdf.ln(0.8)
    pdf.ln(1.7)


def _table(pdf, rows: list[list[str]], aligns: list, **_) -> None:
    from fpdf.fonts import FontFace

    ncols = max(len(r) for r in rows)
    rows = [r + [""] * (ncols - len(r)) for r in rows]
    aligns = (aligns + [None] * ncols)[:ncols]
    for j, a in enumerate(aligns):  # numbers right-aligned unless the table says otherwise
        if a is None:
            body = [_plain(r[j]) for r in rows[1:] if r[j].strip()]
            aligns[j] = "R" if body and all(_NUMBER.match(c) for c in body) else "L"
    size = TEXT_SIZE - 1.5
    pdf.set_font(FONT, "B", size)
    widths = [max(pdf.get_string_width(_plain(r[j])) for r in rows) + 4 for j in range(ncols)]
    width = min(sum(widths), pdf.epw)
    pdf.ln(1)
    with pdf.table(width=width, col_widths=tuple(widths), text_align=tuple(aligns), markdown=True,
                   line_height=size * 0.5, padding=(1.2, 1.8), cell_fill_color=246,
                   cell_fill_mode="ROWS", headings_style=FontFace(emphasis="BOLD", fill_color=225),
                   v_align="MIDDLE") as table:
        pdf.set_font(FONT, "", size)
        for r in rows:
            table.row([_fpdf_markdown(c) for c in r])
    pdf.ln(4)


def _fpdf_markdown(text: str) -> str:
    """A table cell in fpdf2's own markdown: **bold**, __italic__, other markers escaped."""
    out = []
    for style, part, _ in _runs(text):
        for marker in ("**", "__", "~~", "--"):
            part = part.replace(marker, "\\" + marker)
        if "B" in style:
            part = f"**{part}**"
        if "I" in style:
            part = f"__{part}__"
        out.append(part)
    return "".join(out)


def _image(pdf, caption: str, src: str, folder: Path, source: Path) -> None:
    from PIL import Image

    path = folder / src
    try:
        with Image.open(path) as im:
            px_w, px_h = im.size
    except (OSError, ValueError) as err:
        raise LabError(f"{source}: figure {src} cannot be read ({one_line(err)}); the notebook "
                       f"must save it to {path.parent}/ before writing the report") from None
    w = pdf.epw
    h = w * px_h / px_w
    if h > MAX_FIGURE_HEIGHT:
        w, h = w * MAX_FIGURE_HEIGHT / h, MAX_FIGURE_HEIGHT
    if pdf.will_page_break(h + (8 if caption else 2)):
        pdf.add_page()
    pdf.image(str(path), x=pdf.l_margin + (pdf.epw - w) / 2, y=pdf.get_y(), w=w, h=h,
              alt_text=caption or None)
    pdf.set_y(pdf.get_y() + h + 1.5)
    if caption:
        pdf.set_font(FONT, "I", TEXT_SIZE - 1.5)
        pdf.set_text_color(70)
        pdf.multi_cell(0, 4.5, _plain(caption), align="C", new_x="LMARGIN", new_y="NEXT")
        pdf.set_text_color(0)
    pdf.ln(3)


def _code(pdf, text: str, **_) -> None:
    pdf.set_font(MONO, "", TEXT_SIZE - 2)
    pdf.set_fill_color(243)
    pdf.multi_cell(0, 4.4, text or " ", fill=True, padding=2, new_x="LMARGIN", new_y="NEXT")
    pdf.ln(3)


def _rule(pdf, **_) -> None:
    pdf.set_draw_color(170)
    pdf.line(pdf.l_margin, pdf.get_y() + 1, pdf.w - pdf.r_margin, pdf.get_y() + 1)
    pdf.set_draw_color(0)
    pdf.ln(4)


_DRAW = {"heading": _heading, "paragraph": _paragraph, "bullets": _bullets, "table": _table,
         "image": _image, "code": _code, "rule": _rule}
