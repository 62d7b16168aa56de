"""``ovs-ofctl snoop <bridge>``: every OpenFlow message between the switch and a controller, copied to snoopers.

```
 <rundir>/<bridge>.snoop ──accept──► Snooper (hello, then copies) ◄── copies ── Controller (active target)
                                        bounded queue: a copy that does not fit is dropped (Snooper.dropped)
```

As OVS does, a snooper is attached, when it connects, to one primary controller target (``tcp:`` / ``unix:``, which
pyvswitch connects to; passive ones are OVS's service connections): the one whose connection's role is master,
else equal, else slave, else any; it stays with that target across reconnections. Without such a target the
snooper is closed at once (OVS logs "no controller connection to snoop"). Copies are the messages as they are on
the wire, both ways, once the version is negotiated (hellos are not copied); the snooper negotiates its own
version with its hello and is told nothing else.

A snooper never slows the switch: its socket is non-blocking and what it has not taken is held up to
``SNOOP_QUEUE`` bytes; copies beyond that are dropped and counted (logged when it goes).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import selectors
import socket
from typing import Any

from vswitch.openflow.channel import ROLE_SLAVE, Controller

log = logging.getLogger(__name__)

SNOOP_QUEUE = 1 << 20      # bytes of copies held for a snooper that is behind; beyond that copies are dropped
ROLE_EQUAL, ROLE_MASTER = 1, 2
OFPT_HELLO = 0


class Snooper:
    """One ``ovs-ofctl snoop`` connection: its hello, then the copies it is sent."""

    def __init__(self, sock: socket.socket, name: str) -> None:
        self.sock = sock
        self.name = name
        self.rx = bytearray()
        self.tx: collections.deque[bytes | memoryview] = collections.deque()
        self.tx_bytes = 0
        self.ready = False        # its hello arrived: copies go to it from now on
        self.dead = ""            # why it must be closed
        self.writing = False      # registered for EVENT_WRITE
        self.copied = 0
        self.dropped = 0          # copies not queued: the snooper was SNOOP_QUEUE bytes behind
        self.target: Controller | None = None

    def copy(self, data: bytes) -> None:
        """Queue a copy of one message (dropped and counted when the snooper is too far behind)."""
        if not self.ready or self.dead:
            return
        if self.tx_bytes + len(data) > SNOOP_QUEUE:
            self.dropped += 1
            return
        self.tx.append(data)
        self.tx_bytes += len(data)
        self.copied += 1
        self.flush()

    def flush(self) -> None:
        """Hand the socket what it takes now."""
        while self.tx and not self.dead:
            head = self.tx[0]
            try:
                n = self.sock.send(head)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                self.dead = e.strerror or str(e)
                return
            self.tx_bytes -= n
            if n < len(head):
                self.tx[0] = memoryview(head)[n:]
                return
            self.tx.popleft()

    def readable(self) -> None:
        """Take what the snooper sent: its hello makes it ready; anything else is read and ignored."""
        try:
            data = self.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            data, self.dead = b"", e.strerror or str(e)
        if not data:
            self.dead = self.dead or "closed by peer"
            return
        self.rx += data
        while len(self.rx) >= 8:
            length = int.from_bytes(self.rx[2:4], "big")
            if length < 8:
                self.dead = "bad message length"
                return
            if len(self.rx) < length:
                break
            if self.rx[1] == OFPT_HELLO:
                self.ready = True
            del self.rx[:length]


def _preference(ctl: Controller) -> int:
    """OVS's choice of the controller to snoop: master, then equal, then slave, then not connected."""
    conn = ctl.conn
    if conn is None or not conn.version:
        return 0
    return {ROLE_MASTER: 3, ROLE_SLAVE: 1}.get(conn.role, 2)


class Snoop:
    """The snoop socket of one bridge's agent and its snoopers."""

    def __init__(self, agent: Any, rundir: str) -> None:
        self.agent = agent
        self.path = os.path.join(rundir, f"{agent.bridge.name}.snoop")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self.listener.bind(self.path)
        self.listener.listen(8)
        self.listener.setblocking(False)
        agent.sel.register(self.listener, selectors.EVENT_READ, self)
        self.snoopers: list[Snooper] = []
        self._serial = 0

    def event(self, data: Snoop | Snooper, events: int) -> None:
        """The agent's selector says the listener or a snooper is ready."""
        if data is self:
            self._accept()
            return
        assert isinstance(data, Snooper)
        if events & selectors.EVENT_WRITE:
            data.flush()
        if events & selectors.EVENT_READ:
            data.readable()

    def _accept(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        self._serial += 1
        name = f"{self.agent.bridge.name}.snoop#{self._serial}"
        ctls = [c for c in self.agent.controllers.values() if not c.passive]
        if not ctls:
            log.info("openflow %s: no controller connection to snoop", self.agent.bridge.name)
            sock.close()
            return
        sock.setblocking(False)
        s = Snooper(sock, name)
        s.target = max(ctls, key=_preference)   # the first of the most preferred
        s.target.snoopers.append(s)
        self.snoopers.append(s)
        self.agent.sel.register(sock, selectors.EVENT_READ, s)
        s.tx.append(self.agent.hello_bytes())   # our hello: the snooper negotiates with it
        s.tx_bytes += len(s.tx[0])
        s.flush()
        log.info("openflow %s: new snooper %s on controller %s", self.agent.bridge.name, name, s.target.target)

    def sweep(self) -> None:
        """Close the snoopers that went or whose controller target was removed; watch for writability where copies
        wait."""
        for s in list(self.snoopers):
            if s.target is not None and self.agent.controllers.get(s.target.target) is not s.target:
                s.dead = s.dead or "controller removed"
            if s.dead:
                self._close(s)
            elif bool(s.tx) != s.writing:
                s.writing = bool(s.tx)
                self.agent.sel.modify(s.sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if s.writing else 0), s)

    def _close(self, s: Snooper) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.agent.sel.unregister(s.sock)
        s.sock.close()
        self.snoopers.remove(s)
        if s.target is not None and s in s.target.snoopers:
            s.target.snoopers.remove(s)
        log.log(logging.WARNING if s.dropped else logging.INFO,
                "openflow %s: snooper %s gone (%s): %d messages copied, %d dropped (snoop_queue_full)",
                self.agent.bridge.name, s.name, s.dead or "closed", s.copied, s.dropped)

    def close(self) -> None:
        """Close the snoopers and the socket."""
        for s in list(self.snoopers):
            s.dead = s.dead or "switch closing"
            self._close(s)
        self.listener.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
