"""The progress bar the demo draws on stderr while a model trains."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """A small progress bar on a text stream (stderr by default).

    On a terminal it redraws one line in place, at most ``tty_interval`` seconds apart.
    Elsewhere (a log file, CI) it writes a plain line at most every ``log_interval``
    seconds, and always one at the end.

    Args:
        total: the number of steps.
        label: the text at the start of the line.
        stream: where to write; ``sys.stderr`` when None.
        enabled: when False, writes nothing.
        tty_interval: seconds between redraws on a terminal.
        log_interval: seconds between lines elsewhere.
    """

    def __init__(
        self,
        total: int,
        label: str,
        stream: TextIO | None = None,
        enabled: bool = True,
        tty_interval: float = 0.1,
        log_interval: float = 10.0,
    ):
        self.total = max(int(total), 1)
        self.label = label
        self.stream = sys.stderr if stream is None else stream
        self.enabled = enabled
        isatty = getattr(self.stream, "isatty", None)
        self.tty = bool(isatty and isatty())
        self.interval = tty_interval if self.tty else log_interval
        self.start = time.perf_counter()
        self.last = self.start
        self._width = 0

    def _line(self, step: int, info: str) -> str:
        frac = min(step / self.total, 1.0)
        elapsed = time.perf_counter() - self.start
        text = f"{self.label:<14}"
        if self.tty:
            fill = int(round(24 * frac))
            text += f" [{'#' * fill}{'.' * (24 - fill)}]"
        text += f" {frac:4.0%} {step:>{len(str(self.total))}}/{self.total}"
        if info:
            text += f"  {info}"
        text += f"  {elapsed:5.1f}s"
        if 0 < step < self.total:
            text += f" (eta {elapsed / step * (self.total - step):.0f}s)"
        return text

    def _write(self, text: str, final: bool) -> None:
        if self.tty:
            pad = " " * max(self._width - len(text), 0)
            self._width = len(text)
            self.stream.write("\r" + text + pad + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def due(self) -> bool:
        """Whether ``update`` would write now (lets callers skip formatting their info).

        Returns:
            True when enabled and the redraw interval has passed.
        """
        return self.enabled and time.perf_counter() - self.last >= self.interval

    def update(self, step: int, info: str = "") -> None:
        """Reports that ``step`` of ``total`` steps are done; writes only when ``due()``.

        Args:
            step: steps done so far.
            info: short text to show (e.g. the current loss).
        """
        if not self.due():
            return
        self.last = time.perf_counter()
        self._write(self._line(step, info), final=False)

    def close(self, step: int, info: str = "") -> None:
        """Writes the final state and ends the line.

        Args:
            step: steps done (``total`` unless stopped early).
            info: short text to show.
        """
        if self.enabled:
            self._write(self._line(step, info), final=True)
