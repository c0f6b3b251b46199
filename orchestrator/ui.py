"""`kd-sweep ui`: the MLflow UI for the store the other commands use, on this machine, and the link that
opens a sweep on its runs. MLflow 3 opens an experiment on its GenAI overview ("Traces 0", "No data
available") unless the link asks for the model-training view, so every link kd-sweep prints asks for it.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

from results.mlflow_schema import VIEW_KEY, Tag, child_of

from .tracking import local_store_path

DEFAULT_PORT = 5000
# MLflow's UI loads a saved runs-table view from the experiment tag `mlflow.sharedViewState.<key>` when
# a link names the key (its "share view" button writes the same). kd-sweep writes one per sweep (VIEW_TAG).


def sweep_view(parent_id: str, metrics: list[str], params: list[str], tags: list[str]) -> dict:
    """The runs table of one `kd-sweep run`: its trials by name (`scratch`, `teacher`, then `λ=0 · s0`,
    `λ=0 · s1`...), the swept knobs, seed and scores as columns. Sorted by anything but start time, the
    UI lists them flat; by start time it folds them under the parent run."""
    return {"searchFilter": child_of(parent_id),
            "orderByKey": f"tags.`{Tag.RUN_NAME}`", "orderByAsc": True,
            "selectedColumns": [*(f"params.`{p}`" for p in params), *(f"tags.`{t}`" for t in tags),
                                *(f"metrics.`{m}`" for m in metrics)]}


def runs_link(base_url: str, exp_id: str | None, view: bool = True) -> str:
    """The page of an experiment's runs in the model-training view, through kd-sweep's saved view of
    its latest sweep when VIEW (the experiment has one); or the list of experiments."""
    base = base_url.rstrip("/")
    if exp_id is None:
        return f"{base}/#/experiments"
    shared = f"viewStateShareKey={VIEW_KEY}&" if view else ""
    return f"{base}/#/experiments/{exp_id}/runs?{shared}workflowType=machine_learning"


def ui_base(tracking_uri: str) -> str:
    """Where the store's runs are browsed: `kd-sweep ui` on this machine, or a server's own UI."""
    return f"http://127.0.0.1:{DEFAULT_PORT}" if local_store_path(tracking_uri) is not None else tracking_uri.rstrip("/")


def cells_link(tracking_uri: str, exp_id: str):
    """run ids -> those runs in the MLflow UI (the HTML report links each cell to its runs)."""
    from urllib.parse import quote

    base = ui_base(tracking_uri)

    def link(run_ids: tuple[str, ...]) -> str:
        filt = f"attributes.run_id IN ({', '.join(repr(r) for r in run_ids)})"
        # Ordered by name: ordered by start time (the default), the UI folds the runs under their parent
        # and shows only the parent's row.
        order = quote(f"tags.`{Tag.RUN_NAME}`")
        return (f"{base}/#/experiments/{exp_id}/runs?searchFilter={quote(filt)}&orderByKey={order}&orderByAsc=true"
                "&workflowType=machine_learning")
    return link


def browse_hint(tracking_uri: str, exp_id: str | None, view: bool = True) -> str:
    """The line `run`, `report` and `status` end with: where a person looks at the runs."""
    how = "browse the runs:" if local_store_path(tracking_uri) is None else "browse the runs: `kd-sweep ui`, then"
    return f"{how}\n  {runs_link(ui_base(tracking_uri), exp_id, view)}"


def _port_taken(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _answers(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2):
            return True
    except OSError:
        return False


def serve(tracking_uri: str, exp_id: str | None, port: int, echo, view: bool = True) -> int:
    """Start `mlflow ui` on 127.0.0.1:PORT over a local store and wait for Ctrl-C; for a server store,
    print the link to its own UI. The exit code."""
    if local_store_path(tracking_uri) is None:
        echo(f"{tracking_uri} is an MLflow server with its own UI: {runs_link(tracking_uri, exp_id, view)}")
        return 0
    if _port_taken(port):
        echo(f"error: port {port} on 127.0.0.1 is taken (another `kd-sweep ui`?): give another with --port")
        return 1
    url = f"http://127.0.0.1:{port}"

    def stop(signum, frame):  # `kill`, a closed terminal: the UI goes with this process, as on Ctrl-C
        raise KeyboardInterrupt

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop)
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri, "--host", "127.0.0.1",
           "--port", str(port), "--workers", "1"]
    # MLflow 3's server also starts a job runner of seven huey consumers for its GenAI jobs (judges,
    # trace roll-ups), each importing MLflow: ~20 s of CPU at every start for features kd-sweep never uses.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                              start_new_session=True)  # its own group: Ctrl-C here stops it once, cleanly
    try:
        deadline = time.time() + 120
        while not _answers(url):
            if server.poll() is not None:
                err = (server.stderr.read() or "").strip().splitlines()
                echo(f"error: the MLflow UI did not start: {err[-1] if err else f'exit {server.returncode}'}")
                return 1
            if time.time() > deadline:
                echo("error: the MLflow UI did not answer in 120 s")
                return 1
            time.sleep(0.3)
        echo(f"MLflow UI on {tracking_uri}: {runs_link(url, exp_id, view)}")
        echo("(Ctrl-C stops it)")
        server.wait()
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
