"""The one error type labkit raises for bad input: a single line a student can act on."""


class LabError(Exception):
    """Bad input: the message names the file or value, what is wrong and what to do."""

    def _render_traceback_(self):
        """In Jupyter, show the one-line message instead of a page of traceback."""
        return [f"LabError: {self}"]


def one_line(err: BaseException) -> str:
    """The first line of an exception's message (library errors can run to pages)."""
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__
