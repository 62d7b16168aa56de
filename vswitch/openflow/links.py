"""The agent's controller links: each ``Bridge.controller`` target listened on (``ptcp:`` / ``punix:``) or
connected to (``tcp:`` / ``unix:``; a host name looked up on a resolver thread), the backoff of failed attempts
(1, 2, 4, ... seconds up to ``Controller.max_backoff``, each error logged once), and dropping them all when the
datapath ID or the OpenFlow versions change.

A mixin of ``OfAgent`` (which gives it ``sel``, ``conns``, ``controllers`` and ``_accept_socket`` / ``_close``).
"""

from __future__ import annotations

import collections
import contextlib
import errno
import logging
import os
import selectors
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from vswitch.openflow.channel import MAX_BACKOFF, PROBE_INTERVAL, Controller, OfConnection, _numeric_family

log = logging.getLogger("vswitch.openflow.agent")


class ControllerLinks:
    """Connections to (and listeners for) the configured controller targets, for ``OfAgent``."""

    bridge: Any
    sel: selectors.BaseSelector
    conns: dict[int, OfConnection]
    controllers: dict[str, Controller]
    changed: Callable[[], None]
    _resolved: collections.deque[tuple[Controller, Any]]
    _wake: Callable[..., None]
    _accept_socket: Callable[..., None]
    _close: Callable[..., None]

    def _next_try_in(self) -> float:
        """Seconds until a controller is due for its next connection attempt (at most 0.5)."""
        now, soonest = time.monotonic(), 0.5
        for ctl in self.controllers.values():
            idle = ctl.listener is None if ctl.passive else (
                ctl.conn is None and ctl.pending is None and not ctl.resolving)
            if idle:
                soonest = min(soonest, max(0.0, ctl.next_try - now))
        return soonest

    def _apply_controllers(self, targets: list[tuple[str, float]] | list[tuple[str, float, float]]) -> None:
        wanted = {t[0]: (t[1] or PROBE_INTERVAL, t[2] if len(t) > 2 and t[2] else MAX_BACKOFF) for t in targets}
        changed = False
        for target in list(self.controllers):
            if target not in wanted:
                self._drop_controller(self.controllers.pop(target))
                changed = True
        for target, (probe, max_backoff) in wanted.items():
            ctl = self.controllers.get(target)
            if ctl is not None:
                ctl.probe, ctl.max_backoff = probe, max(1.0, max_backoff)
                ctl.backoff = min(ctl.backoff, ctl.max_backoff)
                continue
            try:
                self.controllers[target] = Controller(target, probe, max_backoff)
            except ValueError as e:
                log.warning("openflow %s: %s", self.bridge.name, e)
                continue
            changed = True
        if changed:
            self.changed()

    def _listen(self, ctl: Controller) -> None:
        s = socket.socket(ctl.family(), socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            if ctl.kind == "ptcp":
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(ctl.addr)
            s.bind(ctl.addr)
            s.listen(8)
            s.setblocking(False)
        except (OSError, OverflowError) as e:
            s.close()
            why = getattr(e, "strerror", None) or str(e)
            if why != ctl.logged_error:
                log.warning("openflow %s: cannot listen on %s: %s; retrying every %.0f s", self.bridge.name,
                            ctl.target, why, ctl.max_backoff)
                ctl.logged_error = why
            if why != ctl.last_error:
                ctl.last_error = why
                self.changed()
            ctl.next_try = time.monotonic() + ctl.max_backoff
            return
        ctl.listener = s
        ctl.state = "ACTIVE"
        ctl.logged_error = ""
        self.sel.register(s, selectors.EVENT_READ, ctl)

    def _connect(self, ctl: Controller) -> None:
        """Start a connection attempt; a host name is looked up on a resolver thread first."""
        ctl.state = "CONNECTING"
        if ctl.kind == "unix":
            self._start_connect(ctl, socket.AF_UNIX, ctl.addr)
        elif (family := _numeric_family(ctl.addr[0])) is not None:
            self._start_connect(ctl, family, ctl.addr)
        else:
            ctl.resolving = True
            threading.Thread(target=self._resolve, args=(ctl, *ctl.addr), name=f"resolve-{ctl.addr[0]}"[:15],
                             daemon=True).start()
        if ctl.state == "CONNECTING":   # under way (a failure at once has been recorded already)
            self.changed()

    def _resolve(self, ctl: Controller, host: str, port: int) -> None:
        """Resolver thread: look ``host`` up (this may take seconds) and hand the answer to the agent."""
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            result: Any = (infos[0][0], infos[0][4]) if infos else "no address"
        except (OSError, UnicodeError) as e:
            result = getattr(e, "strerror", None) or str(e)
        self._resolved.append((ctl, result))
        self._wake()

    def _on_resolved(self, ctl: Controller, result: Any) -> None:
        ctl.resolving = False
        if self.controllers.get(ctl.target) is not ctl:
            return   # the controller was removed (or replaced) while its name was looked up
        if isinstance(result, str):
            self._backoff(ctl, f"{ctl.addr[0]}: host name lookup failed: {result}")
        else:
            self._start_connect(ctl, *result)

    def _start_connect(self, ctl: Controller, family: int, addr: Any) -> None:
        """A non-blocking connect to an address that needs no lookup."""
        try:
            s = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        except OSError as e:
            self._backoff(ctl, e.strerror or str(e))
            return
        try:
            err = s.connect_ex(addr)
        except (OSError, OverflowError, ValueError) as e:
            err, why = -1, getattr(e, "strerror", None) or str(e)
        else:
            why = os.strerror(err)
        # a unix socket whose listener's backlog is full says EAGAIN: that is a failure, not a connect underway
        if err not in (0, errno.EINPROGRESS) and not (err == errno.EAGAIN and family != socket.AF_UNIX):
            s.close()
            self._backoff(ctl, why)
            return
        ctl.pending = s
        ctl.attempt_at = time.monotonic()
        self.sel.register(s, selectors.EVENT_WRITE, ctl)

    def _abandon_connect(self, ctl: Controller) -> None:
        s, ctl.pending = ctl.pending, None
        if s is not None:
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(s)
            s.close()

    def _connected(self, ctl: Controller) -> None:
        s = ctl.pending
        if s is None:
            return
        err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._abandon_connect(ctl)
            self._backoff(ctl, os.strerror(err))
            return
        self.sel.unregister(s)
        ctl.pending = None
        self._accept_socket(s, ctl, ctl.target)

    def _backoff(self, ctl: Controller, why: str) -> None:
        """A connection attempt failed (or a connection ended): wait 1, 2, 4, ... up to max_backoff seconds."""
        ctl.state = "BACKOFF"
        if why != ctl.logged_error:
            log.warning("openflow %s: controller %s: %s; retrying with backoff (at most %.0f s)", self.bridge.name,
                        ctl.target, why, ctl.max_backoff)
            ctl.logged_error = why
        ctl.last_error = why
        ctl.next_try = time.monotonic() + ctl.backoff
        ctl.backoff = min(ctl.max_backoff, ctl.backoff * 2)
        self.changed()

    def _reconnect(self, why: str, everyone: bool) -> None:
        """Drop the controller connections (``everyone``: the management ones too); the active ones reconnect at
        once."""
        for conn in list(self.conns.values()):
            ctl = conn.target
            if ctl is None and not everyone:
                continue
            log.info("openflow %s: %s: disconnecting %s", self.bridge.name, why, conn.peer)
            if ctl is not None:
                ctl.logged_error = why   # logged here, as information: not a failure
            self._close(conn, why)
            if ctl is not None and not ctl.passive:
                ctl.next_try = time.monotonic()
                ctl.backoff = 1.0

    def _drop_controller(self, ctl: Controller) -> None:
        if ctl.conn is not None:
            self._close(ctl.conn)
        self._abandon_connect(ctl)
        if ctl.listener is not None:
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(ctl.listener)
            ctl.listener.close()
            ctl.listener = None
        if ctl.kind == "punix":
            with contextlib.suppress(FileNotFoundError):
                os.unlink(ctl.addr)
