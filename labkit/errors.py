"""The one error type labkit raises for bad input: a single line a student can act on."""
import re

REPORT_BUGS = "your course's staff (the project has no public address of its own yet)"
# C0/C1 controls, line separators and the bidirectional overrides that reorder what is shown
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u2028-\u202e\u2066-\u2069]")


def escape(text: str) -> str:
    """`text` with every control character shown as an escape (\\n, \\x1b), so a name taken
    from a file or a path can neither forge lines of output nor drive the terminal."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), str(text))


class LabError(Exception):
    """Bad input: the message names the file or value, what is wrong and what to do.

    The message is escaped here, once, so it is one line wherever it is shown.
    """

    def __init__(self, message: str):
        super().__init__(escape(message))

    def _render_traceback_(self):
        """In Jupyter, show the one-line message instead of a page of traceback."""
        return [f"LabError: {self}"]


def one_line(err: BaseException) -> str:
    """The first line of an exception's message (library errors can run to pages)."""
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


def check_whole(value, what: str, low: int, high: int) -> int:
    """A whole number from `low` to `high` (a seed, a count of epochs), or a one-line LabError."""
    whole = not isinstance(value, bool) and hasattr(value, "__index__")
    if not (whole and low <= value.__index__() <= high):
        raise LabError(f"{what} {value!r}: give a whole number from {low} to {high}")
    return value.__index__()
