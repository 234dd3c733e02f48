"""The one exception type for user mistakes: the CLI prints its message on one line and exits non-zero."""


class CrlError(Exception):
    """A problem with the user's input (a file, a row, a flag), reported without a traceback."""
