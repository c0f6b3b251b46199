"""A claim per config hash, so that two sweeps sharing configs (one store) never train one twice.

A claim is an MLflow experiment named `kd-sweep.claims/<config hash>/<generation>`. Every MLflow store
keeps experiment names unique (a UNIQUE column in sqlite and PostgreSQL, enforced by the server), so
creating one is atomic: of two drivers that create the same name at the same instant, one gets it and
the other gets RESOURCE_ALREADY_EXISTS. The experiment is deleted (soft) at once: the MLflow UI and
kd-sweep's own searches list active experiments only, while the name stays taken. Its tags say who
holds it: the parent run, the sweep, the driver's host and pid.

A claim whose holder is gone (its parent run is no longer RUNNING, or its driver process on this machine
has died, or, from another machine, its heartbeat is older than STALE_S) is taken over by creating the
next generation, which is atomic in the same way. A driver that continues its own parent run (a resumed
sweep) holds that parent's claims already.

Only training is claimed: a config that finished in any sweep is linked before it is claimed, and
`--rerun` (train again on purpose) claims nothing.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, replace
from typing import Callable

from mlflow.exceptions import MlflowException

from results.mlflow_schema import Status, Tag

from .resume import kd_process

PREFIX = "kd-sweep.claims/"
OWNER = "kd.claim.owner"
HEARTBEAT_S = 30.0
STALE_S = 120.0  # four heartbeats missed: a driver on another machine is taken for dead


@dataclass(frozen=True)
class Holder:
    """Who holds a claim this driver does not."""
    parent: str
    sweep: str
    host: str
    pid: int
    alive: bool

    def describe(self) -> str:
        where = f"pid {self.pid}" + (f" on {self.host}" if self.host != socket.gethostname() else "")
        return f"sweep {self.sweep!r} ({where}, parent run {self.parent[:8]})"


class Claims:
    """This driver's claims on one store. `heartbeat()` keeps its parent run marked alive for drivers on
    other machines; `stop()` ends that."""

    def __init__(self, client, parent: str, sweep: str):
        self.client, self.parent, self.sweep = client, parent, sweep
        self.owner = json.dumps({"parent": parent, "sweep": sweep, "host": socket.gethostname(), "pid": os.getpid()})
        self._stop = threading.Event()

    def take(self, config_hash: str, over_dead: bool = False, force: bool = False) -> Holder | None:
        """None when this driver holds CONFIG_HASH's claim now (newly, or from an earlier attempt of its
        parent run); else who holds it. A dead holder's claim is taken over only with OVER_DEAD (the
        caller checks first that the holder did not finish the config before it died); a live holder's
        only with FORCE (its run of the config ended unfinished)."""
        gen = 0
        while True:
            name = f"{PREFIX}{config_hash}/{gen}"
            if self._create(name):
                return None
            exp = self.client.get_experiment_by_name(name)
            if exp is None:  # removed for good (`mlflow gc`) in between: try the same name again
                continue
            holder = self._holder(exp.tags.get(OWNER))
            if holder is not None and holder.parent == self.parent:
                return None
            # Only the latest generation counts, and only it is asked whether its holder lives.
            if holder is not None and not force and \
                    self.client.get_experiment_by_name(f"{PREFIX}{config_hash}/{gen + 1}") is None:
                holder = replace(holder, alive=self.alive(holder))
                if holder.alive or not over_dead:
                    return holder
            gen += 1  # superseded, unreadable, or taken over now

    def _create(self, name: str) -> bool:
        try:
            exp_id = self.client.create_experiment(name, tags={OWNER: self.owner})
        except MlflowException as e:
            if e.error_code == "RESOURCE_ALREADY_EXISTS":
                return False
            raise
        self.client.delete_experiment(exp_id)
        return True

    @staticmethod
    def _holder(owner: str | None) -> Holder | None:
        """Who a claim's OWNER tag names (`alive` not yet known: False)."""
        try:
            o = json.loads(owner or "")
            return Holder(str(o["parent"]), str(o["sweep"]), str(o["host"]), int(o["pid"]), False)
        except (ValueError, KeyError, TypeError):
            return None

    def alive(self, holder: Holder) -> bool:
        """Whether HOLDER's driver is still at work: its parent run RUNNING, and its process alive (this
        machine) or its heartbeat fresh (another machine)."""
        try:
            run = self.client.get_run(holder.parent)
        except MlflowException:
            return False  # its parent run was deleted
        if run.info.status != Status.RUNNING:
            return False
        if holder.host == socket.gethostname():
            # This very process under another parent run is not waiting on itself.
            return holder.pid == os.getpid() or kd_process(holder.host, holder.pid)
        try:
            beat = float(run.data.tags.get(Tag.HEARTBEAT, "0"))
        except ValueError:
            beat = 0.0
        return time.time() - beat < STALE_S

    def heartbeat(self) -> "Claims":
        """Mark the parent run alive now and every HEARTBEAT_S until `stop()`."""
        def beat():
            while True:
                try:
                    self.client.set_tag(self.parent, Tag.HEARTBEAT, f"{time.time():.0f}")
                except Exception:  # noqa: BLE001 - a store hiccup: the next beat tries again
                    pass
                if self._stop.wait(HEARTBEAT_S):
                    return

        threading.Thread(target=beat, name="kd-sweep-heartbeat", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()


POLL_S = 2.0
SAY_EVERY_S = 60.0  # a line while waiting, so a long wait is not silence


def wait_for_holders(claims: Claims, pending: dict[str, Holder], finished: Callable[[set[str]], set[str]],
                     ended: Callable[[str, str], bool], note: Callable[[str], None]) -> list[str]:
    """Wait for the configs of PENDING (config hash -> the other driver holding it). FINISHED(hashes): the
    ones finished by now (the caller links them). A config whose holder died before finishing it, or whose
    run of it ended unfinished (ENDED(hash, holder's parent run)), is claimed here: the hashes returned
    are this driver's to train."""
    mine: list[str] = []
    said = time.monotonic()
    while pending:
        # Liveness before the finished check: a holder that finishes a config and then exits is seen
        # finished, never dead with the config undone.
        alive: dict[str, bool] = {}
        for holder in pending.values():
            if holder.parent not in alive:
                alive[holder.parent] = claims.alive(holder)
        for h in finished(set(pending)):
            pending.pop(h, None)
        for h, holder in list(pending.items()):
            if alive[holder.parent]:
                if not ended(h, holder.parent):
                    continue
                now, why = claims.take(h, force=True), f"its run in {holder.describe()} ended unfinished"
            else:
                now, why = claims.take(h, over_dead=True), f"{holder.describe()} stopped before finishing it"
            if now is None:
                mine.append(h)
                del pending[h]
                note(f"trial {h[:8]}: {why}; training it here")
            else:
                pending[h] = now
        if pending and time.monotonic() - said >= SAY_EVERY_S:
            note(f"still waiting for {len(pending)} trial(s) {describe_holders(pending)}")
            said = time.monotonic()
        if pending:
            time.sleep(POLL_S)
    return mine


def describe_holders(pending: dict[str, Holder]) -> str:
    """"by sweep 'a' (pid 1, parent run 1234abcd)", or with several holders how many each holds."""
    counts = Counter(holder.describe() for holder in pending.values())
    if len(counts) == 1:
        return f"by {next(iter(counts))}"
    return "by " + ", ".join(f"{d}: {n}" for d, n in counts.items())
