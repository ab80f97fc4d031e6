"""What installs labkit in Colab: its name on pip, and the source every notebook's setup cell names.

Each notebook's second cell installs labkit in Colab (and only there) from the line `setup_line`
writes. The reference notebooks leave that source unset (`INSTALL_SOURCE`): this project has no
public address of its own, so the cell says what to set instead of installing from a guess;
`labkit student OUT --install SPEC` writes the course's source into the student edition.
"""
from .errors import LabError

DISTRIBUTION = "labkit-backdoor"  # the name pip knows labkit by (`import labkit`, the `labkit` command)
INSTALL_SOURCE = ""  # what the reference notebooks' setup cells install in Colab: unset
INSTRUCTOR_HINT = f"pip install '{DISTRIBUTION}[instructor]' (it installs nbgrader)"


def setup_line(source: str) -> str:
    """The line of a notebook's setup cell that names what it installs in Colab."""
    return f'    source = "{source}"  # set by your course: a git URL, a wheel URL or a path in /content/drive'


def check_install_source(source: str) -> str:
    """`source` if it can stand as one argument of the setup cell's `%pip install`, else LabError."""
    if not source or any(c.isspace() or c in '"\\\'{}$`' for c in source):
        raise LabError(f"install source {source!r}: give one pip argument without spaces, quotes or "
                       "braces: a git URL (git+https://...), a wheel URL or a path in /content/drive")
    return source
