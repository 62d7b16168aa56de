"""The daemon's ovs-appctl commands (``DaemonCommands``, which ``vswitch.daemon.Daemon`` extends): version, exit,
status, fdb/*, dpif/show, ofproto/trace, coverage/show, memory/show, vlog/*, pmd-stats, dpctl/dump-flows, upcall/show
(the tunnels' commands: ``vswitch.tunnels.appctl``). Each command is guarded: an exception becomes an error reply
and a log line, never the daemon's end. Replies follow ovs-vswitchd's texts (errors end with a newline).
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import ovs.unixctl
import ovs.unixctl.server

from dpif.key import W_IN_PORT
from vswitch import __version__, dpctl

if TYPE_CHECKING:
    from vswitch.bridge import Bridge
    from vswitch.datapath import Datapath
    from vswitch.openflow.agent import OfAgent
    from vswitch.ovsdb_server import OvsdbServer
    from vswitch.tunnelcontrol import TunnelControl

log = logging.getLogger("vswitch.daemon")


def _command_error(name: str, exc: Exception) -> str:
    """The error reply of an ovs-appctl command that raised ``exc``."""
    if isinstance(exc, TimeoutError):
        return (f"{name}: timed out waiting for a switch thread (it is busy or stuck); the command may still take "
                "effect when that thread resumes; the switch keeps running (see its log)\n")
    return f"{name}: failed: {type(exc).__name__}: {exc} (the switch keeps running; details in its log)\n"


def _guarded(name: str, callback: Callable) -> Callable:
    """``callback`` of ovs-appctl command ``name``, with any exception turned into an error reply and a log line:
    a command may fail, the daemon may not."""
    def guarded(conn: ovs.unixctl.server.UnixctlConnection, argv: list[str], aux: object) -> None:
        try:
            callback(conn, argv, aux)
        except Exception as exc:  # noqa: BLE001 - reported to the caller and logged
            if isinstance(exc, TimeoutError):
                log.warning("ovs-appctl %s %s: timed out waiting for a switch thread; answered with an error",
                            name, " ".join(argv))
            else:
                log.exception("ovs-appctl %s %s failed; answered with an error", name, " ".join(argv))
            if getattr(conn, "_request_id", None) is not None:   # not answered yet
                conn.reply_error(_command_error(name, exc))
    guarded.guarded = True   # type: ignore[attr-defined]
    return guarded


def _reply_error_with_newline(conn: ovs.unixctl.server.UnixctlConnection, body: str) -> None:
    """ovs-vswitchd ends every error reply with a newline; the ``ovs`` package's own errors do not."""
    _reply_error(conn, body if body.endswith("\n") else body + "\n")


_reply_error = ovs.unixctl.server.UnixctlConnection.reply_error
ovs.unixctl.server.UnixctlConnection.reply_error = _reply_error_with_newline


VLOG_MODULES = ("vswitch", "backends", "vswitch.daemon", "vswitch.bridge", "vswitch.datapath")
VLOG_LEVELS = {"emer": logging.CRITICAL, "err": logging.ERROR, "warn": logging.WARNING, "info": logging.INFO,
               "dbg": logging.DEBUG, "off": logging.CRITICAL + 10}


def _vlog_level(level: int) -> str:
    for name in ("dbg", "info", "warn", "err", "emer"):
        if level <= VLOG_LEVELS[name]:
            return name
    return "off"


def _cpu_ghz() -> float:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("cpu MHz"):
                    return float(line.split(":")[1]) / 1000
    except OSError:
        pass
    return 1.0


CPU_GHZ = _cpu_ghz()


class DaemonCommands:
    """ovs-appctl's commands over the daemon's bridges, datapath and logs (a part of ``Daemon``)."""

    # what the daemon keeps and the commands read (``vswitch.daemon.Daemon``)
    bridges: dict[str, Bridge]
    datapath: Datapath | None
    server: OvsdbServer | None
    agents: dict[str, OfAgent]
    tunnels: TunnelControl | None
    errors: dict[str, str]
    rundir: str
    remote: str
    started: float
    stop_requested: bool

    def _database_ready(self) -> bool:
        raise NotImplementedError

    def _on_sighup(self, signum: int, frame: object) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------ ovs-appctl
    def _register_commands(self) -> None:
        reg = ovs.unixctl.command_register
        ovs.unixctl.commands.pop("version", None)
        reg("version", "", 0, 0, self._cmd_version, None)
        reg("exit", "[--cleanup]", 0, 1, self._cmd_exit, None)
        reg("fdb/show", "bridge", 1, 1, self._cmd_fdb_show, None)
        reg("ofproto/trace", "bridge br_flow", 1, 2, self._cmd_ofproto_trace, None)
        reg("fdb/flush", "[bridge]", 0, 1, self._cmd_fdb_flush, None)
        reg("fdb/stats-show", "bridge", 1, 1, self._cmd_fdb_stats_show, None)
        reg("dpif/show", "", 0, 0, self._cmd_dpif_show, None)
        reg("coverage/show", "", 0, 0, self._cmd_coverage_show, None)
        reg("memory/show", "", 0, 0, self._cmd_memory_show, None)
        reg("vlog/list", "", 0, 0, self._cmd_vlog_list, None)
        reg("vlog/set", "{spec | PATTERN:destination:pattern}", 0, 8, self._cmd_vlog_set, None)
        reg("dpif-pyvswitch/pmd-stats-show", "[bridge]", 0, 1, self._cmd_pmd_stats_show, None)
        reg("dpif-netdev/pmd-stats-show", "[bridge]", 0, 1, self._cmd_pmd_stats_show, None)
        reg("dpctl/dump-flows", "[bridge]", 0, 1, self._cmd_dump_megaflows, None)
        reg("upcall/show", "", 0, 0, self._cmd_upcall_show, None)
        reg("dpif-pyvswitch/pmd-stats-clear", "[bridge]", 0, 1, self._cmd_pmd_stats_clear, None)
        reg("dpif-netdev/pmd-stats-clear", "[bridge]", 0, 1, self._cmd_pmd_stats_clear, None)
        reg("fdb/stats-clear", "[bridge]", 0, 1, self._cmd_fdb_stats_clear, None)
        reg("vlog/reopen", "", 0, 0, self._cmd_vlog_reopen, None)
        reg("list-commands", "", 0, 0, ovs.unixctl._unixctl_help, None)
        reg("pyvswitch/status", "", 0, 0, self._cmd_status, None)
        if self.tunnels is not None:
            self.tunnels.register(reg)
        for name, command in ovs.unixctl.commands.items():
            if not getattr(command.callback, "guarded", False):
                command.callback = _guarded(name, command.callback)

    def _targets(self, conn: object, argv: list[str]) -> list[Bridge] | None:
        """The bridge named in ``argv``, or every bridge; None (after an error reply) for an unknown name."""
        if not argv:
            return [self.bridges[name] for name in sorted(self.bridges)]
        br = self._bridge(conn, argv[0])
        return None if br is None else [br]

    def _bridge(self, conn: object, name: str) -> Bridge | None:
        br = self.bridges.get(name)
        if br is None:
            conn.reply_error("no such bridge\n")
        return br

    def _cmd_version(self, conn: object, argv: list[str], _aux: object) -> None:
        conn.reply(f"ovs-vswitchd (pyvswitch) {__version__}\n")

    def _cmd_status(self, conn: object, argv: list[str], _aux: object) -> None:
        if self.server is not None:
            self.server.check()   # a death the loop has not seen yet
        ready = self._database_ready()
        problem = ("ovsdb-server down" if self.server is not None and self.server.down
                   else "" if ready else "database not connected")
        up = int(time.monotonic() - self.started)
        lines = [f"state: {'degraded: ' + problem if problem else 'ok'}",
                 f"pyvswitch {__version__}, pid {os.getpid()}, up {up // 3600}:{up // 60 % 60:02}:{up % 60:02}",
                 f"rundir: {self.rundir}",
                 f"database: {self.remote}, {'connected' if ready else 'not connected'}",
                 "ovsdb-server: " + (f"private, {self.server.status()}" if self.server is not None
                                     else "not ours (--db)")]
        ports = ", ".join(f"{name} ({len(br.ports)} ports)" for name, br in sorted(self.bridges.items()))
        lines.append(f"bridges: {len(self.bridges)}" + (f": {ports}" if ports else ""))
        if self.errors:
            lines.append(f"ports that cannot open: {', '.join(sorted(self.errors))} (see Interface.error)")
        conn.reply("\n".join(lines) + "\n")

    def _cmd_exit(self, conn: object, argv: list[str], _aux: object) -> None:
        self.stop_requested = True
        conn.reply(None)

    def _cmd_ofproto_trace(self, conn: object, argv: list[str], _aux: object) -> None:
        if len(argv) == 1:
            name, _, spec = argv[0].partition(" ")
            if name not in self.bridges and "=" in name:
                if len(self.bridges) != 1:
                    conn.reply_error("name the bridge: ofproto/trace BRIDGE FLOW\n")
                    return
                name, spec = next(iter(self.bridges)), argv[0]
        else:
            name, spec = argv
        if self._bridge(conn, name) is None:
            return
        try:
            conn.reply(self.agents[name].trace(spec))
        except ValueError as e:
            conn.reply_error(f"{e}\n")

    def _cmd_fdb_show(self, conn: object, argv: list[str], _aux: object) -> None:
        br = self._bridge(conn, argv[0])
        if br is not None:
            conn.reply(br.fdb_show())

    def _cmd_fdb_flush(self, conn: object, argv: list[str], _aux: object) -> None:
        targets = self._targets(conn, argv)
        if targets is None:
            return
        for br in targets:
            br.fdb_flush()
        conn.reply("table successfully flushed\n")

    def _cmd_fdb_stats_show(self, conn: object, argv: list[str], _aux: object) -> None:
        br = self._bridge(conn, argv[0])
        if br is None:
            return
        st = br.fdb_stats()
        conn.reply(
            f'Statistics for bridge "{br.name}":\n'
            f"  Current/maximum MAC entries in the table: {st['current']}/{st['max']}\n"
            f"  Current static MAC entries in the table : {st['static']}\n"
            f"  Total number of learned MAC entries     : {st['learned']}\n"
            f"  Total number of expired MAC entries     : {st['aged']}\n"
            f"  Total number of evicted MAC entries     : 0\n"
            f"  Total number of port moved MAC entries  : {st['moved']}\n"
            f"  Total number of MACs not learned (full) : {st['table_full']}\n"
            f"  MAC aging time (seconds)                : {st['aging_time']}\n")

    def _cmd_dpif_show(self, conn: object, argv: list[str], _aux: object) -> None:
        dp = self.datapath
        up = dp.upcalls if dp is not None else None
        missed = up.counters["upcalls"] if up is not None else 0
        hit = max(0, (dp.pmd.packets if dp is not None else 0) - missed)
        lines = [f"netdev@{dp.name if dp is not None else 'ovs-netdev'}: hit:{hit} missed:{missed}"]
        for name, br in sorted(self.bridges.items()):
            lines.append(f"  {name}:")
            for bp in sorted(br.ports.values(), key=lambda p: p.name):   # by name, as OVS lists them
                peer = getattr(bp.port, "peer", "")
                lines.append(f"    {dpctl.port_line(bp.name, bp.ofport, bp.port_no, bp.port.type, peer)}")
        conn.reply("\n".join(lines) + "\n")

    def _cmd_coverage_show(self, conn: object, argv: list[str], _aux: object) -> None:
        totals: dict[str, int] = {}
        for br in self.bridges.values():
            for name, value in list(br.drop_stats().items()) + list(br.fdb_stats().items()):
                if name not in ("current", "static", "max", "aging_time"):
                    totals[name] = totals.get(name, 0) + value
        lines = ["Event coverage (totals since start):"]
        lines += [f"{name:<26} total: {value}" for name, value in sorted(totals.items()) if value]
        zero = sum(1 for v in totals.values() if not v)
        lines.append(f"{zero} events never hit")
        conn.reply("\n".join(lines) + "\n")

    def _cmd_memory_show(self, conn: object, argv: list[str], _aux: object) -> None:
        ports = sum(len(br.ports) for br in self.bridges.values())
        macs = sum(br.fdb_stats()["current"] for br in self.bridges.values())
        pool = self.datapath.pool.data.nbytes if self.datapath is not None else 0
        slots = self.datapath.pool.n_slots if self.datapath is not None else 0
        conn.reply(f"bridges:{len(self.bridges)} ports:{ports} mac-entries:{macs} pool-slots:{slots} "
                   f"pool-bytes:{pool}\n")

    def _cmd_vlog_list(self, conn: object, argv: list[str], _aux: object) -> None:
        lines = ["                 console    syslog    file", "                 -------    ------    ------"]
        for name in VLOG_MODULES:
            level = _vlog_level(logging.getLogger(name).getEffectiveLevel())
            lines.append(f"{name:<16} {level:<10} {'off':<9} {level}")
        conn.reply("\n".join(lines) + "\n")

    def _cmd_vlog_set(self, conn: object, argv: list[str], _aux: object) -> None:
        for spec in argv or ["ANY:any:dbg"]:
            module, level = "ANY", None
            for word in spec.replace("=", ":").split(":"):
                if word in VLOG_LEVELS:
                    level = VLOG_LEVELS[word]
                elif word in VLOG_MODULES or word == "ANY":
                    module = word
                elif word == "syslog":
                    conn.reply_error("pyvswitch does not log to syslog (destinations: console, file)\n")
                    return
                elif word not in ("console", "file", "any"):
                    conn.reply_error(f"unknown module, destination or level \"{word}\"\n")
                    return
            if level is None:
                conn.reply_error(f"no level in \"{spec}\" (emer, err, warn, info, dbg, off)\n")
                return
            for name in VLOG_MODULES if module == "ANY" else [module]:
                logging.getLogger(name).setLevel(level)
        conn.reply(None)

    def _cmd_pmd_stats_clear(self, conn: object, argv: list[str], _aux: object) -> None:
        if self._targets(conn, argv) is None:   # one datapath thread serves every bridge
            return
        if self.datapath is not None:
            self.datapath.pmd.__init__()
        conn.reply(None)

    def _cmd_fdb_stats_clear(self, conn: object, argv: list[str], _aux: object) -> None:
        targets = self._targets(conn, argv)
        if targets is None:
            return
        for br in targets:
            br.clear_fdb_stats()
        conn.reply("statistics successfully cleared\n")

    def _cmd_vlog_reopen(self, conn: object, argv: list[str], _aux: object) -> None:
        self._on_sighup(signal.SIGHUP, None)
        conn.reply(None)

    def _cmd_dump_megaflows(self, conn: object, argv: list[str], _aux: object) -> None:
        dp = self.datapath
        names = {"ovs-netdev", "netdev@ovs-netdev"} | ({dp.name, f"netdev@{dp.name}"} if dp is not None else set())
        bridge = -1   # -1: every megaflow of the datapath; else those of frames received by that bridge
        if argv and argv[0] not in names:
            br = self._bridge(conn, argv[0])
            if br is None:
                return
            bridge = br.dp.index
        up = dp.upcalls if dp is not None else None
        lines = []
        if dp is not None and up is not None:
            now = dp.now()
            port_bridge = dp.xbridges.port_bridge
            for mf in up.cache.dump():
                in_port = int(mf.key[W_IN_PORT])
                if bridge < 0 or (in_port < len(port_bridge) and port_bridge[in_port] == bridge):
                    lines.append(dpctl.format_megaflow(mf, now))
        conn.reply("".join(ln + "\n" for ln in lines))

    def _cmd_upcall_show(self, conn: object, argv: list[str], _aux: object) -> None:
        dp = self.datapath
        up = dp.upcalls if dp is not None else None
        if dp is None or up is None:
            conn.reply("")
            return
        st = up.stats()
        st["max_flows"] = up.cache.max_flows
        conn.reply(dpctl.upcall_show(f"netdev@{dp.name}", st, up.max_idle))

    def _cmd_pmd_stats_show(self, conn: object, argv: list[str], _aux: object) -> None:
        if self._targets(conn, argv) is None:   # one datapath thread serves every bridge
            return
        dp = self.datapath
        if dp is None:
            conn.reply("")
            return
        st = dp.pmd.as_dict()
        polls = st["busy_polls"] + st["idle_polls"]
        lines = [
            f"pmd thread {dp.thread_name}:",
            f"  packets received: {st['packets']}",
            f"  bursts: {st['bursts']}",
            f"  avg. packets per burst: {st['avg_burst']:.2f}",
            f"  busy polls: {st['busy_polls']} ({100 * st['busy_polls'] / polls if polls else 0:.1f}%)",
            f"  idle polls: {st['idle_polls']} ({100 * st['idle_polls'] / polls if polls else 0:.1f}%)",
            f"  epoll sleeps: {st['sleeps']}",
            f"  avg. processing cycles per packet: {st['ns_per_packet'] * CPU_GHZ:.0f} "
            f"({st['ns_per_packet']:.0f} ns/pkt)",
        ]
        up = dp.upcalls
        if up is not None:
            mf = up.stats()
            lines += [f"  emc hits: {mf['emc_hits']}", f"  megaflow hits: {mf['megaflow_hits']}",
                      f"  avg. subtable lookups per megaflow hit: "
                      f"{mf['subtable_lookups'] / mf['megaflow_hits'] if mf['megaflow_hits'] else 0:.2f}",
                      f"  miss with success upcall: {mf['upcalls']}", f"  megaflows: {mf['flows']}"]
        conn.reply("\n".join(lines) + "\n")
