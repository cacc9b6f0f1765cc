"""Exit codes and the one error type every command raises.

Scripts branch on blobctl's exit code, so the codes are a contract: a code
never changes meaning, new ones are only appended. ``ExitCode`` is the one
source of truth; the ``--help`` epilog, the package docstring and the README
table are checked against it by the tests.
"""

from __future__ import annotations

import enum
import http
import textwrap


class ExitCode(enum.IntEnum):
    """What a blobctl process exit status means."""

    OK = 0
    ERROR = 1
    USAGE = 2
    AUTH = 3
    FORBIDDEN = 4
    NOT_FOUND = 5
    CONFLICT = 6
    UNAVAILABLE = 7
    BAD_REQUEST = 8
    PARTIAL = 9
    INTERRUPTED = 130


#: One line per exit code, shown by ``blobctl --help`` and in the README.
MEANINGS: dict[ExitCode, str] = {
    ExitCode.OK: "success",
    ExitCode.ERROR: "other error: a local file that cannot be read or written, a digest "
                    "mismatch, an unexpected answer (500, 405)",
    ExitCode.USAGE: "usage error: bad arguments or options",
    ExitCode.AUTH: "not logged in, login expired, or 401 Unauthorized",
    ExitCode.FORBIDDEN: "403 Forbidden: logged in, but no permission",
    ExitCode.NOT_FOUND: "404: no such container, blob or user",
    ExitCode.CONFLICT: "409 or 412: exists, not empty, or a condition failed",
    ExitCode.UNAVAILABLE: "503, 507, 408, 429, cannot connect, timed out, or health "
                          "degraded: retrying later may help",
    ExitCode.BAD_REQUEST: "400, 411, 413 or 416: the node refused the request as invalid",
    ExitCode.PARTIAL: "a recursive download skipped some blobs: a name that would escape "
                      "the target directory, or that clashes with another blob's file",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C)",
}

_BY_STATUS: dict[int, ExitCode] = {
    401: ExitCode.AUTH,
    403: ExitCode.FORBIDDEN,
    404: ExitCode.NOT_FOUND,
    409: ExitCode.CONFLICT,
    412: ExitCode.CONFLICT,
    408: ExitCode.UNAVAILABLE,
    429: ExitCode.UNAVAILABLE,
    502: ExitCode.UNAVAILABLE,
    503: ExitCode.UNAVAILABLE,
    504: ExitCode.UNAVAILABLE,
    507: ExitCode.UNAVAILABLE,
    400: ExitCode.BAD_REQUEST,
    411: ExitCode.BAD_REQUEST,
    413: ExitCode.BAD_REQUEST,
    416: ExitCode.BAD_REQUEST,
}


def exit_code_for_status(status: int) -> ExitCode:
    """The exit code for an HTTP error status (anything unlisted is ``ERROR``)."""
    return _BY_STATUS.get(status, ExitCode.ERROR)


class CliError(Exception):
    """A failure to report as one line on stderr, ending blobctl with ``exit_code``."""

    def __init__(self, message: str, exit_code: ExitCode = ExitCode.ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


class ApiError(CliError):
    """The node answered with an error: its status and the API's error code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        line = f"{code}: {message} ({status})"
        if status == 401:
            line += "; run 'blobctl login'"
        super().__init__(line, exit_code_for_status(status))
        self.status = status
        self.code = code


def status_phrase_code(status: int) -> str:
    """An error code for an answer without the API's JSON body (e.g. from a proxy)."""
    try:
        return http.HTTPStatus(status).phrase.replace(" ", "").replace("-", "")
    except ValueError:
        return f"HTTP{status}"


def exit_codes_text(width: int = 79) -> str:
    """The exit-code table as plain text (the ``--help`` epilog)."""
    return "\n".join(textwrap.fill(MEANINGS[code], width, initial_indent=f"  {int(code):>3}  ",
                                   subsequent_indent=" " * 7) for code in ExitCode)
