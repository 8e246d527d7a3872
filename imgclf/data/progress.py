"""Progress a person sees wherever the output goes: tqdm's bar in a terminal, its widget in Jupyter (``tqdm.auto``,
with ipywidgets installed), and where neither can draw (output piped or logged, a batch job) a line every
``every_s`` seconds, as Keras' ``verbose=2`` prints instead of a bar."""
from __future__ import annotations

import sys
import time
from typing import Callable

from tqdm.auto import tqdm


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Progress:
    """``total`` steps of ``desc``: :meth:`update` as they are done, :meth:`close` at the end (or ``with``)."""

    def __init__(self, total: int | None, desc: str, unit: str = "image", quiet: bool = False, every_s: float = 30.0,
                 say: Callable[[str], None] = _stderr, delay_s: float = 0.0) -> None:
        """``delay_s``: the bar appears only once the work has taken that long (a quick step shows nothing)."""
        self.bar = tqdm(total=total, desc=desc, unit=unit, disable=True if quiet else None, leave=False,
                        dynamic_ncols=True, delay=delay_s)
        self.lines = not quiet and self.bar.disable  # no bar can be drawn here: say it in lines
        self.total, self.desc, self.unit, self.every_s, self.say = total, desc, unit, every_s, say
        self.done, self.started = 0, time.perf_counter()
        self.next_line = self.started + every_s

    def update(self, done: int, postfix: dict[str, str] | None = None) -> None:
        """``done`` steps done so far (not an increment), with the figures to show beside them."""
        if postfix:
            self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(done - self.done)
        self.done = done
        now = time.perf_counter()
        if self.lines and now >= self.next_line and (self.total is None or done < self.total):
            figures = "".join(f"  {k} {v}" for k, v in (postfix or {}).items())
            of = f"/{self.total:,}" if self.total is not None else ""
            self.say(f"{self.desc}  {self.unit} {done:,}{of}{figures}  {now - self.started:.0f}s")
            self.next_line = now + self.every_s

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
