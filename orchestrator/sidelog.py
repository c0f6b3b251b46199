"""The tracebacks Ray Tune, Ray and MLflow log on the driver, kept in a file instead of the terminal.

kd-sweep says every failure in its own line (`retry …`, `FAILED …`, the store or cluster line), with
the exception's last line. Tune and MLflow log the same failure again as a traceback, once per retry:
a store whose disk fills wrote 700 lines with 15 tracebacks before kd-sweep's one line. Those records
go to a log file the lines name, so nothing is lost and the terminal keeps kd-sweep's lines.

The file lives under the home folder (`~/.kd-sweep/logs/`), not beside the store or the checkpoints:
their disk is the one that fills. Writing it never raises: a log that cannot be written is dropped.
"""
from __future__ import annotations

import logging
import os
import time
import traceback
from pathlib import Path

# Logger -> (lowest level, message prefix) of its records that repeat a failure kd-sweep already says
# in its own line.
ROUTED: dict[str, tuple[int, str]] = {
    "ray.tune.execution.tune_controller": (logging.ERROR, ""),     # "Trial task failed for trial …"
    "ray.tune.execution.experiment_state": (logging.ERROR, ""),    # "Saving experiment state … failed"
    "ray.tune.tune": (logging.ERROR, "Trials did not complete"),   # kd-sweep's summary names them
    "ray.train._internal.syncer": (logging.WARNING, "Last sync command failed"),  # a checkpoint's copy
    "mlflow.store.db.utils": (logging.ERROR, ""),                  # "SQLAlchemy database error …"
    "ray._private.worker": (logging.ERROR, "Unhandled error"),     # a failed task's result nobody read
}


def logs_folder() -> Path:
    return Path(os.environ.get("KD_SWEEP_LOGS", Path.home() / ".kd-sweep" / "logs"))


class SideLog(logging.Filter):
    """A filter on each logger of ROUTED: a matching record is appended to PATH and not shown."""

    def __init__(self, name: str):
        super().__init__()
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.path = logs_folder() / f"{name}-{stamp}-{os.getpid()}.log"
        self.count = 0       # records routed here
        self.written = 0     # of them, written to the file
        self._loggers: list[logging.Logger] = []

    def start(self) -> SideLog:
        for name in ROUTED:
            logger = logging.getLogger(name)
            logger.addFilter(self)
            self._loggers.append(logger)
        return self

    def stop(self) -> None:
        for logger in self._loggers:
            logger.removeFilter(self)
        self._loggers.clear()

    def filter(self, record: logging.LogRecord) -> bool:
        level, prefix = ROUTED.get(record.name, (None, ""))
        if level is None or record.levelno < level or not record.getMessage().startswith(prefix):
            return True
        self.count += 1
        self._write(record)
        return False

    def _write(self, record: logging.LogRecord) -> None:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
        text = f"{when} {record.levelname} {record.name}: {record.getMessage()}\n"
        if record.exc_info:
            text += "".join(traceback.format_exception(*record.exc_info))
        elif record.exc_text:
            text += record.exc_text + "\n"
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            # Owner-only: a traceback can hold paths, hosts and a sweep's settings.
            with os.fdopen(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "a",
                           encoding="utf-8") as f:
                f.write(text + "\n")
            self.written += 1
        except OSError:
            pass  # a full or read-only home: the failure is still said in kd-sweep's own line

    def where(self) -> str | None:
        """Where the routed tracebacks are, for a line that names it; None when there are none."""
        if not self.written:
            return None
        home = str(Path.home())
        path = str(self.path)
        return "~" + path[len(home):] if path.startswith(home + os.sep) else path

    def said(self) -> str:
        """' (tracebacks: PATH)' for the end of a failure line, or ''."""
        where = self.where()
        return f" (tracebacks: {where})" if where else ""
