"""The driver's side log: Tune's and MLflow's tracebacks of failures kd-sweep already says go to a file."""
import logging
import os

from orchestrator.sidelog import SideLog


def _error(logger: str, msg: str, level=logging.ERROR) -> None:
    try:
        raise OSError(28, "No space left on device")
    except OSError:
        logging.getLogger(logger).log(level, msg, exc_info=True)


class _Terminal(logging.Handler):
    """What reaches the terminal's handlers (Ray's own loggers do not propagate to the root)."""

    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


NAMES = ("ray.tune.execution.tune_controller", "ray._private.worker", "ray.train._internal.syncer")


def test_routed_records_go_to_the_file_and_others_stay_on_the_terminal(tmp_path, monkeypatch):
    monkeypatch.setenv("KD_SWEEP_LOGS", str(tmp_path / "logs"))
    terminal = _Terminal()
    for name in NAMES:
        logging.getLogger(name).addHandler(terminal)
    log = SideLog("s").start()
    try:
        assert log.where() is None and log.said() == ""
        _error("ray.tune.execution.tune_controller", "Trial task failed for trial x")
        _error("ray._private.worker", "Unhandled error (suppress with ...)")
        _error("ray._private.worker", "some other worker error")             # not a repeat: shown
        _error("ray.tune.execution.tune_controller", "a warning", logging.WARNING)  # below ERROR: shown
        _error("ray.train._internal.syncer", "Last sync command failed with the following error:",
               logging.WARNING)
    finally:
        log.stop()
    _error("ray.tune.execution.tune_controller", "after stop")  # the filter is gone: shown
    for name in NAMES:
        logging.getLogger(name).removeHandler(terminal)
    shown = "\n".join(terminal.lines)
    assert "Trial task failed" not in shown and "Unhandled error" not in shown and "Last sync" not in shown
    assert "some other worker error" in shown and "a warning" in shown and "after stop" in shown
    assert log.count == 3 and log.written == 3
    text = log.path.read_text()
    assert text.count("Traceback (most recent call last)") == 3 and "No space left on device" in text
    assert "Trial task failed for trial x" in text and "some other" not in text
    assert os.stat(log.path).st_mode & 0o777 == 0o600
    assert log.where() == str(log.path) and log.said() == f" (tracebacks: {log.path})"


def test_a_log_that_cannot_be_written_is_dropped_without_a_word(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("KD_SWEEP_LOGS", str(blocker / "logs"))  # a folder under a file: never creatable
    log = SideLog("s").start()
    try:
        _error("mlflow.store.db.utils", "SQLAlchemy database error")
    finally:
        log.stop()
    assert log.count == 1 and log.written == 0 and log.where() is None
    assert "Logging error" not in capsys.readouterr().err


def test_the_home_folder_is_written_as_a_tilde(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KD_SWEEP_LOGS", raising=False)
    log = SideLog("s").start()
    try:
        _error("ray.tune.execution.experiment_state", "Saving experiment state failed")
    finally:
        log.stop()
    assert log.where() == f"~/.kd-sweep/logs/{log.path.name}"
