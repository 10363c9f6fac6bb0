"""``rabbitmqctl`` for one node: look into queues, consumers and connections; inject faults.

The shared broker (the one every engineer's tests use) is only ever looked into, or has this
test's own connections closed and queues deleted; anything that stops or reconfigures a node is
refused unless the node is a private one a test started (:mod:`tests.support.private_node`).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any

#: rabbitmqctl starts an Erlang VM per call (about a second); a stuck node must not hang a test.
CTL_TIMEOUT = 60.0


def have_rabbitmqctl() -> bool:
    return shutil.which("rabbitmqctl") is not None


class ControlError(AssertionError):
    """A rabbitmqctl command failed; carries its output."""


@dataclass(frozen=True, slots=True)
class QueueState:
    name: str
    messages: int
    ready: int
    unacked: int
    consumers: int
    arguments: dict[str, Any]
    policy: str


class Control:
    """``rabbitmqctl [-n node]``; ``private`` allows the commands that change the node."""

    def __init__(self, node: str | None = None, *, private: bool = False) -> None:
        self.node = node
        self.private = private

    def run(self, *args: str, timeout: float = CTL_TIMEOUT) -> str:
        command = ["rabbitmqctl", *(["-n", self.node] if self.node else []), *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise ControlError(
                f"{' '.join(command)} failed ({done.returncode}): "
                f"{done.stdout[-2000:]}{done.stderr[-2000:]}"
            )
        return done.stdout

    def _json(self, *args: str) -> list[dict[str, Any]]:
        out = self.run(*args, "--formatter", "json", "-q")
        return json.loads(out) if out.strip() else []

    def _changing(self, what: str) -> None:
        if not self.private:
            raise ControlError(f"refusing to {what} the shared broker; use a private node")

    # -- looking -------------------------------------------------------------------------
    def queues(self, prefix: str = "") -> dict[str, QueueState]:
        """Every queue whose name starts with ``prefix``, as the broker counts it."""
        rows = self._json(
            "list_queues",
            "name",
            "messages",
            "messages_ready",
            "messages_unacknowledged",
            "consumers",
            "arguments",
            "policy",
        )
        return {
            r["name"]: QueueState(
                r["name"],
                int(r["messages"] or 0),
                int(r["messages_ready"] or 0),
                int(r["messages_unacknowledged"] or 0),
                int(r["consumers"] or 0),
                {a[0]: a[2] for a in r.get("arguments") or []},
                str(r.get("policy") or ""),
            )
            for r in rows
            if r["name"].startswith(prefix)
        }

    def connections(self) -> list[tuple[str, str]]:
        """``(pid, connection_name)`` of each connection. The pid in the form close_connection
        takes (the JSON formatter prints another), the name from its client properties."""
        rows = []
        for line in self.run("list_connections", "pid", "client_properties", "-s").splitlines():
            pid, _, properties = line.partition("\t")
            name = re.search(r'\{"connection_name","([^"]*)"\}', properties)
            rows.append((pid, name.group(1) if name else ""))
        return rows

    def connection_states(self) -> list[tuple[str, str]]:
        """``(connection_name, state)``: running, blocking or blocked (resource alarms)."""
        rows = []
        for line in self.run("list_connections", "client_properties", "state", "-s").splitlines():
            properties, _, state = line.rpartition("\t")
            name = re.search(r'\{"connection_name","([^"]*)"\}', properties)
            rows.append((name.group(1) if name else "", state.strip()))
        return rows

    def consumers(self, prefix: str = "") -> dict[str, int]:
        """Consumers per queue whose name starts with ``prefix``. Unlike the count a passive
        declare returns, this drops a cancelled consumer at once on quorum queues (the
        declare counts it until its unacked messages are settled)."""
        counts: dict[str, int] = {}
        for row in self._json("list_consumers", "queue_name", "consumer_tag"):
            if row["queue_name"].startswith(prefix):
                counts[row["queue_name"]] = counts.get(row["queue_name"], 0) + 1
        return counts

    def bindings(self) -> list[dict[str, Any]]:
        return self._json(
            "list_bindings", "source_name", "destination_name", "routing_key", "arguments"
        )

    def eval(self, expression: str) -> str:
        return self.run("eval", expression).strip()

    # -- faults a test may inject on its own objects ---------------------------------------
    def close_connections(self, name_contains: str, reason: str = "fault injected") -> int:
        """Close every connection whose client-given name contains ``name_contains``."""
        closed = 0
        for pid, name in self.connections():
            if name_contains in name:
                self.run("close_connection", pid, reason)
                closed += 1
        return closed

    def delete_queue(self, name: str) -> None:
        self.run("delete_queue", name)

    # -- faults only a private node may take --------------------------------------------
    def stop_app(self) -> None:
        self._changing("stop")
        self.run("stop_app")

    def start_app(self) -> None:
        self._changing("start")
        self.run("start_app")
        self.run("await_startup")

    def set_policy(self, name: str, pattern: str, definition: dict[str, Any]) -> None:
        self._changing("set a policy on")
        self.run("set_policy", name, pattern, json.dumps(definition), "--apply-to", "queues")

    def clear_policy(self, name: str) -> None:
        self._changing("clear a policy on")
        self.run("clear_policy", name)

    def policies(self) -> list[dict[str, Any]]:
        return self._json("list_policies")

    def set_memory_watermark(self, fraction: float) -> None:
        self._changing("change the memory watermark of")
        self.run("set_vm_memory_high_watermark", str(fraction))

    def add_user(self, user: str, password: str) -> None:
        """A user with full permissions on ``/``."""
        self._changing("add a user to")
        self.run("add_user", user, password)
        self.run("set_permissions", "-p", "/", user, ".*", ".*", ".*")

    def delete_user(self, user: str) -> None:
        self._changing("delete a user of")
        self.run("delete_user", user)
