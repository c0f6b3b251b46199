"""What `kd-sweep run` prints: a line per finished or failed trial with its numbers, then a summary.

Everything is per student trial (a trial config), so a pack's students count one by one."""
from __future__ import annotations

import time


def _fmt_time(s: float) -> str:
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class Progress:
    """`every`: seconds between the status lines printed while trials run (Ray's tables stay off)."""

    def __init__(self, out, every: float = 30.0):
        self.out = out
        self.every = every
        self.last_line = time.time()
        self.running: set[str] = set()
        self.t0 = time.time()
        self.total = 0
        self.done = 0
        self.failures: list[tuple[str, str]] = []
        self.started_at: dict[str, float] = {}
        self.last: dict[str, dict] = {}

    def note(self, line: str) -> None:
        self._print(line)

    def begin(self, title: str, total: int) -> None:
        self.total, self.done = total, 0
        self.phase_t0 = time.time()
        self._print(title)

    def started(self, cfg: dict) -> None:
        self.started_at.setdefault(cfg["name"], time.time())
        self.running.add(cfg["name"])

    def result(self, cfg: dict, result: dict) -> None:
        self.last[cfg["name"]] = result
        if time.time() - self.last_line >= self.every:
            self.status_line()

    def status_line(self) -> None:
        epochs = [f"{r.get('epoch', 0)}" for t, r in self.last.items() if t in self.running]
        self._print(f"... {self.done}/{self.total} finished ({len(self.failures)} failed), {len(self.running)} running"
                    f"{' at epochs ' + ','.join(epochs) if epochs else ''}; elapsed {_fmt_time(time.time() - self.t0)},"
                    f" eta {self._eta()}")

    def _eta(self) -> str:
        if not self.done:
            return "?"
        per = (time.time() - self.phase_t0) / self.done
        return _fmt_time(per * (self.total - self.done))

    def _print(self, line: str) -> None:
        print(line, file=self.out, flush=True)
        self.last_line = time.time()

    def completed(self, cfg: dict) -> None:
        self.running.discard(cfg["name"])
        self.done += 1
        res = self.last.get(cfg["name"], {})
        scores = "  ".join(f"{k.removeprefix('eval/').removesuffix('_top1')} {v:.2f}"
                           for k, v in res.items() if k.startswith("eval/") and k.endswith("_top1"))
        took = time.time() - self.started_at.get(cfg["name"], time.time())
        self._print(f"[{self.done}/{self.total}] done   {cfg['name']:<44} {cfg['labels']['pair']:<24} {scores}"
                    f"  ({_fmt_time(took)}; elapsed {_fmt_time(time.time() - self.t0)}, eta {self._eta()})")

    def stopped_early(self, cfg: dict, epoch: int) -> None:
        self.running.discard(cfg["name"])
        self.done += 1
        self._print(f"[{self.done}/{self.total}] early  {cfg['name']}: stopped by the scheduler"
                    f" after epoch {epoch}")

    def failed(self, cfg: dict, reason: str) -> None:
        self.running.discard(cfg["name"])
        self.done += 1
        name = cfg["name"]
        self.failures.append((name, reason))
        self._print(f"[{self.done}/{self.total}] FAILED {name}: {reason}")

    def retrying(self, name: str, reason: str) -> None:
        self._print(f"retry  {name} from its last checkpoint: {reason}")

    def summary(self) -> int:
        total = _fmt_time(time.time() - self.t0)
        if self.failures:
            self._print(f"{len(self.failures)} trial(s) failed ({total}):")
            for name, reason in self.failures:
                self._print(f"  {name}: {reason}")
        else:
            self._print(f"all trials finished ({total})")
        return len(self.failures)
