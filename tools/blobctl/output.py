"""Where blobctl's output goes: results on stdout, everything else on stderr.

stdout carries only the result: a rich table or plain lines on a terminal,
JSON with ``--json``, or the blob's bytes for ``get ... -``. Progress bars,
notes and the one-line error go to stderr, so a pipe never sees them.
Errors are written without rich, so a long message is never wrapped into two
lines.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console, RenderableType
from rich.measure import Measurement
from rich.progress import (BarColumn, DownloadColumn, Progress, TaskID, TextColumn,
                           TimeRemainingColumn, TransferSpeedColumn)
from rich.text import Text

from tools.blobctl.client import Meter, NoMeter


class Output:
    """The consoles of one blobctl run and its ``--json`` / progress choices."""

    def __init__(self, *, json_mode: bool, progress: bool | None) -> None:
        self.json_mode = json_mode
        self.out = Console(highlight=False, soft_wrap=False)
        self.err = Console(stderr=True, highlight=False)
        #: None: bars only when stderr is a terminal; ``--progress`` / ``--no-progress``.
        self.show_progress = (self.err.is_terminal if progress is None else progress)
        if json_mode and progress is None:
            self.show_progress = False

    def result(self, data: Any, human: RenderableType | None = None) -> None:
        """Print a command's result: ``data`` as JSON, or ``human`` (if any) for people."""
        if self.json_mode:
            self.json(data)
        elif isinstance(human, str):
            self.out.print(Text(human), soft_wrap=True)
        elif human is not None:
            width = self.out.width
            self.out.width = self.width_for(human)
            try:
                self.out.print(human)
            finally:
                self.out.width = width

    def width_for(self, renderable: RenderableType) -> int:
        """Wide enough that no cell is cut: a long name runs past the terminal's edge (as
        with ``ls -l``) rather than being shortened or folded."""
        options = self.out.options.update_width(100_000)
        needed = Measurement.get(self.out, options, renderable).maximum
        return max(self.out.width, needed)

    def json(self, data: Any) -> None:
        sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        sys.stdout.flush()

    def lines(self, lines: list[str]) -> None:
        """Plain lines on stdout (names people pipe into other tools): no markup, no wrap."""
        for line in lines:
            sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def note(self, text: str) -> None:
        """A remark for the person at the terminal (stderr, never markup-interpreted)."""
        self.err.print(text, markup=False, highlight=False, soft_wrap=True)

    @contextmanager
    def meter(self, description: str) -> Iterator[Meter]:
        """A progress bar for one transfer (or nothing when progress is off)."""
        if not self.show_progress:
            yield NoMeter()
            return
        with self.progress() as progress:
            meter = BarMeter(progress, description)
            yield meter
            meter.finish()

    def progress(self) -> Progress:
        """A rich Progress on stderr for transfers (several bars may share it)."""
        return Progress(TextColumn("{task.description}", markup=False), BarColumn(),
                        DownloadColumn(binary_units=True), TransferSpeedColumn(),
                        TimeRemainingColumn(), console=self.err,
                        disable=not self.show_progress)


def error_line(message: str) -> None:
    """The one line a failed run writes: ``blobctl: MESSAGE`` on stderr."""
    one_line = " ".join(message.split("\n"))
    sys.stderr.write(f"blobctl: {one_line}\n")
    sys.stderr.flush()


class BarMeter:
    """One task of a rich Progress, fed by the client's transfer loop."""

    def __init__(self, progress: Progress, description: str) -> None:
        self._progress = progress
        self._description = description
        self._task: TaskID | None = None

    def start(self, total: int | None) -> None:
        if self._task is None:
            self._task = self._progress.add_task(self._description, total=total)
        else:
            self._progress.reset(self._task, total=total)

    def advance(self, n: int) -> None:
        if self._task is not None:
            self._progress.advance(self._task, n)

    def close(self) -> None:
        """Take this bar off the display (a tree shows only the files in flight)."""
        if self._task is not None:
            self._progress.remove_task(self._task)
            self._task = None

    def finish(self) -> None:
        """A transfer of unknown size ends as a full bar, not a pulsing one."""
        if self._task is not None:
            done = next(t.completed for t in self._progress.tasks if t.id == self._task)
            self._progress.update(self._task, total=done, completed=done)
