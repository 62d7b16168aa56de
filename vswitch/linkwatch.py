"""Kernel link changes for the daemon: a NETLINK_ROUTE socket subscribed to RTMGRP_LINK, so a port whose carrier
or admin state changes (a veth peer taken down, a tap closed) is noticed at once, as ovs-vswitchd notices it:
``Interface.link_state`` is written back, controllers get a port_status, and group liveness follows
(``vswitch.bridge.Bridge.sync_link_state``).

```
 kernel ──RTM_NEWLINK / RTM_DELLINK──► LinkWatch (fd in the daemon's poll) ──drain()──► Daemon.ports_changed
```
"""

from __future__ import annotations

import logging
import socket

log = logging.getLogger(__name__)

RTMGRP_LINK = 1
RCVBUF = 1 << 20


class LinkWatch:
    """A non-blocking netlink socket that hears every link change of this network namespace."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
                                  socket.NETLINK_ROUTE)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
            self.sock.bind((0, RTMGRP_LINK))
        except OSError:
            self.sock.close()
            raise

    def fileno(self) -> int:
        return self.sock.fileno()

    def drain(self) -> bool:
        """Read every pending notification; True when any arrived (or some were lost: the queue overflowed)."""
        seen = False
        while True:
            try:
                if not self.sock.recv(65536):
                    return seen
                seen = True
            except BlockingIOError:
                return seen
            except OSError as e:      # ENOBUFS: notifications were dropped, so something changed
                log.debug("link notifications: %s", e)
                seen = True

    def close(self) -> None:
        self.sock.close()
