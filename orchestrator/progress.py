"""What `kd-sweep run` prints: a line per finished or failed trial with its numbers, the trials that run
(each with its epoch, loss, last score and ETA), then a summary. On a terminal the running trials are
a block redrawn in place under the finished lines (rich); elsewhere (a log file, CI) the same block
is printed as plain lines every `every` seconds. Lines fit 100 columns; on a terminal narrower than
that, the redrawn block is cut to its width and the printed lines wrap.

Everything is per student trial (a trial config), so a pack's students count one by one."""
from __future__ import annotations

import math
import statistics
import time

WIDTH = 100
SHOWN = 12  # running trials listed at most; the rest are counted


def _fmt_time(s: float) -> str:
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def _label(cfg: dict) -> str:
    return cfg["labels"].get("run", cfg["name"])


def _scores(result: dict, sep: str = "  ", curve: bool = False) -> str:
    """The final scores (eval/*_top1); with CURVE, the k-NN curve's point too (`eval.every`)."""
    text = sep.join(f"{k.removeprefix('eval/').removesuffix('_top1')} {v:.2f}" for k, v in result.items()
                     if k.startswith("eval/") and k.endswith("_top1") and isinstance(v, (int, float)))
    point = result.get("curve/knn_top1")
    return f"{text}{sep if text else ''}knn~ {point:.2f}" if curve and isinstance(point, (int, float)) else text


class _Trial:
    def __init__(self, cfg: dict):
        self.label = _label(cfg)
        self.epochs = int(cfg.get("train", {}).get("epochs", 0))
        self.t0 = time.time()
        self.epoch = 0
        self.epoch_s: list[float] = []
        self.last: dict = {}

    def eta(self) -> float | None:
        if not self.epoch_s:
            return None
        return statistics.fmean(self.epoch_s) * max(self.epochs - self.epoch, 0)

    def line(self) -> str:
        loss = self.last.get("train/loss")
        eta = self.eta()
        text = (f"  {self.label:<22.22} epoch {self.epoch:>3}/{self.epochs:<3}"
                f"{f' loss {loss:<8.4g}' if isinstance(loss, (int, float)) else ''}"
                f" {_scores(self.last, ' ', curve=True)}{f' eta {_fmt_time(eta)}' if eta is not None else ''}")
        return text[:WIDTH].rstrip()


class Progress:
    """`every`: seconds between the plain status blocks when not on a terminal. `live`: redraw the
    running trials in place (default: when OUT is a terminal)."""

    def __init__(self, out, every: float = 30.0, live: bool | None = None, tracebacks=lambda: None):
        self.out = out
        self.tracebacks = tracebacks  # -> where the failures' tracebacks are written, or None
        self.every = every
        self.last_line = time.time()
        self.t0 = time.time()
        self.total = 0
        self.done = 0
        self.failures: list[tuple[str, str]] = []
        self.trials: dict[str, _Trial] = {}  # running, by trial name
        self.took: list[float] = []  # wall time of each finished trial of this phase
        self.slots = 1  # most trials seen running at once: packs and parallel trials
        self.shown = False  # a status block of this phase printed yet (plain mode)
        self._live = None
        if live if live is not None else getattr(out, "isatty", lambda: False)():
            from rich.console import Console
            from rich.live import Live

            # The terminal's own width (rich reads it at each draw, so a resized window is followed): a
            # block line longer than the terminal would wrap, and the redraw, counting lines, would leave
            # the wrapped rows behind.
            self._live = Live("", console=Console(file=out, highlight=False, force_terminal=True),
                              auto_refresh=False,
                              transient=True, redirect_stdout=False, redirect_stderr=False)
            self._live.start()

    def __getstate__(self) -> dict:
        """Tune pickles its callbacks, and so this, into the experiment's state: the terminal stays here."""
        return {**self.__dict__, "_live": None}

    def width(self) -> int:
        """Columns to fill: the terminal's, at most WIDTH; WIDTH when not on a terminal."""
        return min(WIDTH, self._live.console.width) if self._live is not None else WIDTH

    # --- lines ---------------------------------------------------------------------------------------
    def _print(self, line: str) -> None:
        if self._live is not None:
            self._live.console.print(line, markup=False, highlight=False, soft_wrap=False)
            self._redraw()
        else:
            print(line, file=self.out, flush=True)
        self.last_line = time.time()

    def note(self, line: str) -> None:
        self._print(line)

    def begin(self, title: str, total: int) -> None:
        self.total, self.done, self.took, self.shown = total, 0, [], False
        self.phase_t0 = time.time()
        self._print(title)

    def started(self, cfg: dict) -> None:
        self.trials.setdefault(cfg["name"], _Trial(cfg))
        self.slots = max(self.slots, len(self.trials))
        self._redraw()

    def result(self, cfg: dict, result: dict) -> None:
        t = self.trials.setdefault(cfg["name"], _Trial(cfg))
        t.last = result
        t.epoch = int(result.get("epoch", t.epoch) or 0)
        if isinstance(result.get("train/epoch_s"), (int, float)):
            t.epoch_s.append(float(result["train/epoch_s"]))
        if self._live is not None:
            self._redraw()
        elif not self.shown or time.time() - self.last_line >= self.every:
            self.shown = True
            self.status_block()

    # --- the running trials --------------------------------------------------------------------------
    def header(self) -> str:
        return (f"... {self.done}/{self.total} finished ({len(self.failures)} failed), {len(self.trials)} running;"
                f" elapsed {_fmt_time(time.time() - self.t0)}, eta {self._eta()}")

    def block(self) -> list[str]:
        rows = [t.line() for t in list(self.trials.values())[:SHOWN]]
        if len(self.trials) > SHOWN:
            rows.append(f"  ... and {len(self.trials) - SHOWN} more running")
        return [self.header(), *rows]

    def status_block(self) -> None:
        for line in self.block():
            print(line, file=self.out, flush=True)
        self.last_line = time.time()

    def _redraw(self) -> None:
        if self._live is None:
            return
        from rich.text import Text

        self._live.update(Text("\n".join(self.block()) if self.trials else "", no_wrap=True, overflow="ellipsis"),
                          refresh=True)

    def _eta(self) -> str:
        """The running trials' longest remaining time, then the trials not started yet in waves of as
        many as have run at once (a pack's students run together), each as long as the finished ones
        took (or as the running ones will)."""
        left = self.total - self.done
        if left <= 0:
            return "0s"
        etas = [e for t in self.trials.values() if (e := t.eta()) is not None]
        per = statistics.median(self.took) if self.took else \
            max((statistics.fmean(t.epoch_s) * t.epochs for t in self.trials.values() if t.epoch_s), default=None)
        if per is None:
            return "?"
        waiting = max(left - len(self.trials), 0)
        return _fmt_time(max(etas, default=0.0) + math.ceil(waiting / max(self.slots, 1)) * per)

    # --- ends of trials ------------------------------------------------------------------------------
    def _end(self, cfg: dict) -> _Trial | None:
        self.done += 1
        return self.trials.pop(cfg["name"], None)

    def completed(self, cfg: dict) -> None:
        t = self._end(cfg)
        took = time.time() - t.t0 if t else 0.0
        self.took.append(took)
        scores = _scores(t.last if t else {})
        # Aligned columns where the terminal has room for them; packed on a narrower one.
        wide = self.width() >= WIDTH
        self._print(f"[{self.done}/{self.total}] done   {_label(cfg):<{26 if wide else 22}} {scores:<{40 if wide else 0}}"
                    f" {_fmt_time(took):>6}  eta {self._eta()}"[:WIDTH])

    def stopped_early(self, cfg: dict, epoch: int) -> None:
        self._end(cfg)
        self._print(f"[{self.done}/{self.total}] early  {_label(cfg)}: stopped by the scheduler after epoch {epoch}")

    def failed(self, cfg: dict, reason: str) -> None:
        self._end(cfg)
        self.failures.append((_label(cfg), reason))
        self._print(f"[{self.done}/{self.total}] FAILED {_label(cfg)}: {reason}")

    def retrying(self, name: str, reason: str) -> None:
        self._print(f"retry  {name} from its last checkpoint: {reason}")

    def summary(self) -> int:
        total = _fmt_time(time.time() - self.t0)
        if self.failures:
            self._print(f"{len(self.failures)} trial(s) failed ({total}):")
            for name, reason in self.failures:
                self._print(f"  {name}: {reason}")
            if where := self.tracebacks():
                self._print(f"  tracebacks: {where}")
        else:
            self._print(f"all trials finished ({total})")
        return len(self.failures)

    def close(self) -> None:
        """Ends the redrawn block (the terminal keeps the printed lines)."""
        if self._live is not None:
            self._live.stop()
            self._live = None
