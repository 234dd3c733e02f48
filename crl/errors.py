"""The one exception type for user mistakes: the CLI prints its message on one line and exits non-zero."""


class CrlError(Exception):
    """A problem with the user's input (a file, a row, a flag), reported without a traceback."""


def first_line(e: BaseException) -> str:
    """The first line of a library's exception message (at most 200 characters), to quote in a CrlError."""
    line = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return line if len(line) <= 200 else line[:197] + "..."
