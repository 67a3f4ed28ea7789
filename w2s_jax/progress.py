"""Progress that suits where it goes: a tqdm bar on a terminal, plain lines in a log.

When stderr is a terminal, `progress(...)` is a tqdm bar. Otherwise (a pipe, a file, a batch job's log) it writes
one plain line every `W2S_PROGRESS_SECONDS` seconds (default 10) while a stage runs, and one when it ends (the
rate and time left of a running line count from the first step, which holds the compilation):

    strong_ceiling: step 120/500 (24%) loss=0.6512 | 3.1 step/s | 0:38 elapsed, ~2:02 left
    strong_ceiling: done 500/500 step in 2:41 (3.1 step/s) loss=0.4120

so a log holds no carriage-return frames and a few lines per stage. `W2S_PROGRESS=bar|lines|off` forces a mode.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any, Iterable, TextIO

DEFAULT_SECONDS = 10.0


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


class Lines:
    """The tqdm calls the package uses (iterate, update, set_postfix, close, `with`), as periodic plain lines."""

    def __init__(self, iterable: Iterable | None = None, total: int | None = None, desc: str = "", unit: str = "it",
                 disable: bool = False, interval: float | None = None, stream: TextIO | None = None, **_: Any):
        self.iterable, self.total, self.desc, self.unit, self.disable = iterable, total, desc, unit, disable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            self.total = len(iterable)
        self.interval = interval if interval is not None else float(os.environ.get("W2S_PROGRESS_SECONDS",
                                                                                   DEFAULT_SECONDS))
        self.stream = stream
        self.n, self.postfix, self.closed = 0, "", False
        self.start = self.last = time.monotonic()
        self._mark, self._mark_n = None, 0

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()  # only a stage that ran to its end says "done" (an error stays the log's last line)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        if exc_type is None:
            self.close()
        self.closed = True

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **kwargs) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in items.items())

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if self._mark is None:  # the first update holds the compilation: the rate and its ETA count from here
            self._mark = self.last = now
            self._mark_n = self.n
        elif now - self.last >= self.interval:
            self.last = now
            self._write(self._running(now))

    def _rate(self, now: float) -> float:
        return self.n / max(now - self.start, 1e-9)

    def _running(self, now: float) -> str:
        rate, elapsed = (self.n - self._mark_n) / max(now - self._mark, 1e-9), now - self.start
        of = f"/{self.total} ({100 * self.n / self.total:.0f}%)" if self.total else ""
        left = f", ~{_clock((self.total - self.n) / rate)} left" if self.total and rate > 0 else ""
        post = f" {self.postfix}" if self.postfix else ""
        return (f"{self.desc}: {self.unit} {self.n}{of}{post} | {rate:.3g} {self.unit}/s | "
                f"{_clock(elapsed)} elapsed{left}")

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.n:
            now = time.monotonic()
            of = f"/{self.total}" if self.total else ""
            post = f" {self.postfix}" if self.postfix else ""
            self._write(f"{self.desc}: done {self.n}{of} {self.unit} in {_clock(now - self.start)} "
                        f"({self._rate(now):.3g} {self.unit}/s){post}")

    def _write(self, line: str) -> None:
        if self.disable:
            return
        stream = self.stream or sys.stderr
        stream.write(line + "\n")
        stream.flush()


def mode() -> str:
    if os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false"):  # non-primary processes
        return "off"
    forced = os.environ.get("W2S_PROGRESS", "").strip().lower()
    if forced in ("bar", "lines", "off"):
        return forced
    try:
        return "bar" if sys.stderr.isatty() else "lines"
    except (AttributeError, ValueError):  # a closed or replaced stream
        return "lines"


def progress(iterable: Iterable | None = None, **kwargs: Any):
    """tqdm's signature (`total`, `desc`, `unit`, `leave`, `disable`); a bar or plain lines (module docstring)."""
    chosen = mode()
    if chosen == "off":
        kwargs["disable"] = True
    if chosen == "bar":
        from tqdm.auto import tqdm

        return tqdm(iterable, **kwargs)
    return Lines(iterable, **kwargs)
