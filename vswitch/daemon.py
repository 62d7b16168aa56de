"""``pyvswitch run``: the ovs-vswitchd replacement driven by OVSDB, inspected with ovs-appctl.

```
 ovs-vsctl ──► ovsdb-server ──(IDL)──► Daemon.reconcile ──► Bridge / Port objects ──► one datapath (thread)
                   ▲                          │
                   └── ofport, mac_in_use, error, link_state, statistics, cur_cfg = next_cfg
 ovs-appctl ──► <rundir>/ovs-vswitchd.<pid>.ctl (unixctl JSON-RPC) ──► version, exit, fdb/show, dpif/show
```
"""

from __future__ import annotations

import array
import errno
import fcntl
import logging
import os
import re
import signal
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import ovs.db.idl
import ovs.poller
import ovs.unixctl
import ovs.unixctl.server

from backends.port import PortError
from backends.sriov import (
    LINK_STATES,
    SYSFS_ROOT,
    VLAN_PROTOS,
    SriovError,
    SriovVfPort,
    Sysfs,
    VfNetlink,
    representor,
    set_num_vfs,
    virtual_function,
)
from backends.tap import set_link
from backends.tunnel import TUNNEL_TYPES, TunnelPort
from backends.tunnel import parse_config as parse_tunnel_config
from vswitch import __version__
from vswitch.bridge import Bridge, BridgeError, format_mac, parse_mac
from vswitch.daemon_commands import DaemonCommands
from vswitch.datapath import Datapath
from vswitch.linkwatch import LinkWatch
from vswitch.openflow.agent import OfAgent
from vswitch.ovsdb_server import OvsdbServer, OvsdbServerError, find_schema, is_running
from vswitch.tunnelcontrol import TunnelControl
from vswitch.vlan import VlanConfig, VlanConfigError
from vswitch.warmup import warm_up_kernels

log = logging.getLogger(__name__)

OFPP_LOCAL = 65534
SIOCETHTOOL = 0x8946
ETHTOOL_GDRVINFO = 0x00000003
ETHTOOL_DRVINFO_SIZE = 196
SUPPORTED_TYPES = ("", "system", "internal", "tap", "dpdkvhostuser", "dpdkvhostuserclient", "sriov-vf", "patch",
                   "geneve", "vxlan", "gre")
#: ``Open_vSwitch.iface_types``: the interface types this switch opens
IFACE_TYPES = sorted(t for t in SUPPORTED_TYPES if t)
#: ``Interface.options`` keys each type reads (a change re-opens the port).
TYPE_OPTIONS = {"dpdkvhostuserclient": ("vhost-server-path",),
                "sriov-vf": ("pf", "vf", "vlan-proto", "qos", "spoofchk", "trust", "link-state", "min-tx-rate",
                             "max-tx-rate")}
#: sriov-vf numeric options: (backend keyword, lowest, highest)
VF_NUMBERS = {"vf": ("vf", 0, 65535), "qos": ("qos", 0, 7), "min-tx-rate": ("min_tx_rate", 0, 1_000_000),
              "max-tx-rate": ("max_tx_rate", 0, 1_000_000)}
STATS_INTERVAL = 5.0
RETRY_INTERVAL = 2.0
DATABASE_WAIT = 2.0      # seconds to wait for the database at start before saying so


def _stopped_while_starting(signum: int, _frame: object) -> None:
    """SIGTERM / SIGINT before the loop runs: ``run``'s clean-up stops what has started (a private
    ovsdb-server, the warm-up's second process)."""
    raise DaemonError(f"stopped by {signal.Signals(signum).name} while starting")


class DaemonError(RuntimeError):
    """The daemon cannot start; the message says why."""


@dataclass(frozen=True)
class PortSpec:
    """What OVSDB asks for one port (one interface per port)."""

    iface: str
    type: str
    vlan: VlanConfig
    ofport_request: int | None
    options: tuple[tuple[str, str], ...] = ()


MAC_TABLE_MIN, MAC_TABLE_MAX = 10, 1_000_000   # OVS's bounds for mac-table-size
MAC_AGING_MAX = 86400


def _bounded(cfg: dict, key: str, default: int, lo: int, hi: int, bridge: str) -> int:
    """An integer ``other_config`` setting, clamped to [lo, hi]; a bad value logs and gives the default."""
    text = cfg.get(key)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        log.warning("bridge %s: other_config:%s=%r is not a number; using %d", bridge, key, text, default)
        return default
    if not lo <= value <= hi:
        clamped = min(max(value, lo), hi)
        log.warning("bridge %s: other_config:%s=%d is outside %d..%d; using %d", bridge, key, value, lo, hi, clamped)
        return clamped
    return value


def parse_dpid(text: str) -> int | None:
    """``other_config:datapath-id`` as ovs-vswitchd 3.1 takes it: exactly 16 hex digits, or ``0x`` and at most 16;
    None for anything else, and for zero."""
    if re.fullmatch(r"[0-9a-fA-F]{16}|0[xX][0-9a-fA-F]{1,16}", text):
        return int(text, 16) or None
    return None


def default_bridge_mac(row_uuid: uuid.UUID) -> int:
    """The MAC ovs-vswitchd gives a bridge without ``other_config:hwaddr`` (and without a port with a universally
    administered MAC): the first 6 bytes of its Bridge row's UUID as OVS holds it in memory (four 32-bit words,
    little-endian on x86), made unicast and locally administered. Stable across restarts."""
    b = row_uuid.bytes
    return int.from_bytes(bytes([b[3] & 0xFE | 0x02, b[2], b[1], b[0], b[7], b[6]]), "big")


def patch_problem(name: str, options: dict[str, str]) -> str:
    """Why a patch interface's ``options`` cannot be, in ovs-vswitchd's words ("": they can)."""
    peer = options.get("peer")
    if not peer:
        return f"{name}: patch type requires valid 'peer' argument"
    if len(options) > 1:
        return f"{name}: patch type takes only a 'peer' argument"
    if peer == name:
        return f"{name}: patch peer must not be self"
    return ""


def _opt(value: list) -> object:
    return value[0] if value else None


def _link_status(ifname: str) -> dict[str, str]:
    """``Interface.status`` as OVS fills it where we can know it: the driver (veth, tun, ...) via ETHTOOL_GDRVINFO."""
    buf = array.array("B", struct.pack("I", ETHTOOL_GDRVINFO) + bytes(ETHTOOL_DRVINFO_SIZE - 4))
    ifreq = struct.pack("16sP", ifname.encode()[:15], buf.buffer_info()[0])
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            fcntl.ioctl(sock, SIOCETHTOOL, ifreq)
    except OSError:  # the device may be gone or in another netns: status is best effort
        return {}
    raw = buf.tobytes()
    out = {}
    for key, lo, hi in (("driver_name", 4, 36), ("driver_version", 36, 68), ("firmware_version", 68, 100)):
        value = raw[lo:hi].split(b"\0", 1)[0].decode(errors="replace")
        if value:
            out[key] = value
    return out


def _link_speed(ifname: str) -> list[int]:
    """``[bits per second]`` from sysfs where the driver reports it (veth: 10 Gb/s), else ``[]``."""
    try:
        with open(f"/sys/class/net/{ifname}/speed") as f:
            mbps = int(f.read().strip())
    except (OSError, ValueError):
        return []
    return [mbps * 1_000_000] if mbps > 0 else []


class Pidfile:
    """``<rundir>/ovs-vswitchd.pid`` holding this process's pid under a POSIX write lock (ovs-appctl checks it)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self.fd)
            raise DaemonError(f"{path} is locked: another ovs-vswitchd or pyvswitch runs in this rundir") from exc
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f"{os.getpid()}\n".encode())

    def remove(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.close(self.fd)


class Daemon(DaemonCommands):
    """Keeps the running bridges equal to what OVSDB says, and writes back what OVS writes."""

    def __init__(self, rundir: str, db: str | None = None, pidfile: str = "", sysfs: str = SYSFS_ROOT,
                 netlink: str = "") -> None:
        self.rundir = os.path.abspath(rundir)
        self.sysfs = Sysfs(sysfs)
        self.netlink_spec = netlink
        self.vf_netlink: VfNetlink | None = None
        #: errors of ports that are open but whose configuration was refused (options:num-vfs on a PF)
        self.config_errors: dict[str, str] = {}
        #: (PF, VF index) -> a re-opened VF's settings from before the switch first took it (given back when its
        #: interface is deleted or moves to another VF)
        self.vf_before: dict[tuple[str, int], dict | None] = {}
        self.policing_warned: set[str] = set()
        self.identity_warned: set[tuple[str, str, str]] = set()   # (bridge, other_config key, value) logged
        self.pidfile_path = pidfile or os.path.join(self.rundir, "ovs-vswitchd.pid")
        self.ctl_path = ""
        os.makedirs(self.rundir, exist_ok=True)
        self.server: OvsdbServer | None = None
        self.remote = db
        self.bridges: dict[str, Bridge] = {}
        self.datapath: Datapath | None = None   # every bridge's (OVS's netdev@ovs-netdev), made with the first
        self.agents: dict[str, OfAgent] = {}
        self.specs: dict[tuple[str, str], PortSpec] = {}
        self.errors: dict[str, str] = {}
        self.status_done: set[str] = set()
        self.stop_requested = False
        self.last_seqno = -1
        self.next_stats = 0.0
        self.next_retry = 0.0
        self.pidfile: Pidfile | None = None
        self.unixctl: ovs.unixctl.server.UnixctlServer | None = None
        self.idl: ovs.db.idl.Idl | None = None
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.ports_changed = False
        self.linkwatch: LinkWatch | None = None    # kernel link changes (started by ``start``)
        self.started = time.monotonic()
        self.db_ready = False
        self.db_lost_at: float | None = None
        self.reconcile_failed = False   # the last reconcile raised: retried every RETRY_INTERVAL
        self.thread_names: dict[int, str] = {}
        self.tunnels: TunnelControl | None = None   # routes, neighbours, tunnel ports (made by ``start``)

    # ------------------------------------------------------------ start / stop
    def start(self) -> None:
        """Pidfile, ovsdb-server (private unless --db), unixctl socket, IDL."""
        for sig in (signal.SIGTERM, signal.SIGINT):   # until the loop runs: a clean stop of what started
            signal.signal(sig, _stopped_while_starting)
        self.pidfile = Pidfile(self.pidfile_path)
        self.started = time.monotonic()
        self._remove_stale_sockets()
        self.tunnels = TunnelControl()
        try:
            self.linkwatch = LinkWatch()
        except OSError as e:
            self.linkwatch = None
            log.warning("no link notifications (%s): link state is read when something else changes", e)
        if self.remote is None:
            self.server = OvsdbServer(self.rundir)
            self.server.start()
            self.remote = self.server.remote
        self.ctl_path = os.path.join(self.rundir, f"ovs-vswitchd.{os.getpid()}.ctl")
        err, self.unixctl = ovs.unixctl.server.UnixctlServer.create(self.ctl_path, version=__version__)
        if err:
            raise DaemonError(f"cannot listen on {self.ctl_path}: {os.strerror(err)}")
        self._register_commands()
        took = warm_up_kernels()   # before the database: no control call or burst ever waits for a compile
        log.info("kernels loaded or compiled in %.1f s", took)
        helper = ovs.db.idl.SchemaHelper(location=find_schema())
        for table in ("Open_vSwitch", "Bridge", "Port", "Interface", "Controller"):
            helper.register_table(table)
        self.idl = ovs.db.idl.Idl(self.remote, helper)
        session = getattr(self.idl, "_session", None)
        if self.server is not None and session is not None:   # a restarted server is found again within 1 s
            session.reconnect.set_backoff(1000, 1000)
        signal.set_wakeup_fd(self._wake_w)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        signal.signal(signal.SIGHUP, self._on_sighup)

    def wait_for_database(self, timeout: float) -> bool:
        """Whether the database answered within ``timeout`` seconds (the IDL's first contents arrived)."""
        assert self.idl is not None
        deadline = time.monotonic() + timeout
        while True:
            self.idl.run()
            if self.idl.has_ever_connected() or time.monotonic() >= deadline:
                break
            poller = ovs.poller.Poller()
            self.idl.wait(poller)
            poller.timer_wait(int(1000 * max(0.0, deadline - time.monotonic())) + 1)
            poller.block()
        return self.idl.has_ever_connected()

    def _remove_stale_sockets(self) -> None:
        """Control sockets of daemons that died in this rundir (we hold the pidfile lock: none of them runs)."""
        for name in os.listdir(self.rundir):
            m = re.fullmatch(r"ovs-vswitchd\.([0-9]+)\.ctl", name)
            if m and int(m.group(1)) != os.getpid() and not is_running(int(m.group(1))):
                try:
                    os.unlink(os.path.join(self.rundir, name))
                except FileNotFoundError:
                    pass

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.stop_requested = True

    def _on_sighup(self, _signum: int, _frame: object) -> None:
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.FileHandler):
                handler.close()  # reopened on the next record (log rotation)

    def close(self) -> None:
        """Stop every bridge, the unixctl socket and a private ovsdb-server; remove the pidfile."""
        for agent in self.agents.values():
            agent.close()
        self.agents.clear()
        for br in self.bridges.values():
            br.close()
        self.bridges.clear()
        if self.datapath is not None:
            self.datapath.close()
            self.datapath = None
        if self.unixctl is not None:
            self.unixctl.close()
            self.unixctl = None
        if self.idl is not None:
            self.idl.close()
            self.idl = None
        if self.server is not None:
            self.server.stop()
        if self.vf_netlink is not None:
            self.vf_netlink.close()
            self.vf_netlink = None
        if self.linkwatch is not None:
            self.linkwatch.close()
            self.linkwatch = None
        if self.pidfile is not None:
            self.pidfile.remove()
            self.pidfile = None
        if self.ctl_path:
            try:
                os.unlink(self.ctl_path)
            except FileNotFoundError:
                pass

    # ------------------------------------------------------------ main loop
    def run(self) -> None:
        """Serve until SIGTERM/SIGINT or ``ovs-appctl exit``."""
        assert self.idl is not None and self.unixctl is not None
        while not self.stop_requested:
            if self.server is not None:
                try:
                    if self.server.supervise():
                        self.idl.force_reconnect()   # the database is back: do not wait for the IDL's back-off
                except Exception:  # noqa: BLE001 - supervision must not take the switch down; tried again
                    log.exception("supervising ovsdb-server failed")
            self.idl.run()
            try:
                self.unixctl.run()
            except Exception:  # noqa: BLE001 - each command is guarded (_guarded); this is the server itself
                log.exception("serving ovs-appctl failed")
            now = time.monotonic()
            ready = self._database_ready()
            if ready and (
                    self.idl.change_seqno != self.last_seqno
                    or now >= self.next_retry and (self.errors or self.config_errors or self.reconcile_failed)):
                self.last_seqno = self.idl.change_seqno
                try:
                    self.reconcile()
                except Exception:  # a bug or an unforeseen value must not take the switch down
                    self.reconcile_failed = True
                    log.exception("applying the database failed; retrying in %.0f s", RETRY_INTERVAL)
                self.next_retry = now + RETRY_INTERVAL
                self._name_threads()
                if self.tunnels is not None:
                    self.tunnels.sync_ports(self._tunnel_ports())
            if self.tunnels is not None:
                try:
                    self.tunnels.run(self._tunnel_ports())
                except Exception:  # noqa: BLE001 - tunnels must not take the switch down; retried next loop
                    log.exception("updating tunnel routes and neighbours failed")
            if self.ports_changed and ready:
                self.ports_changed = False
                for br in self.bridges.values():     # link state: group liveness
                    br.sync_link_state()
                for agent in self.agents.values():   # link state: port_status to the controllers
                    agent.ports_changed()
                try:
                    self.write_back()
                except Exception:  # noqa: BLE001 - reported; the next change or reconcile retries
                    log.exception("writing port status back failed")
            if ready and now >= self.next_stats:
                self.next_stats = now + self.stats_interval()
                try:
                    self.write_statistics()
                except Exception:  # noqa: BLE001 - counters must not take the switch down
                    log.exception("writing statistics failed")
            if self.stop_requested:
                break
            if ready and self.idl.change_seqno != self.last_seqno:
                continue  # updates arrived while we committed: apply them before sleeping
            poller = ovs.poller.Poller()
            self.idl.wait(poller)
            self.unixctl.wait(poller)
            poller.fd_wait(self._wake_r, ovs.poller.POLLIN)
            if self.linkwatch is not None:
                poller.fd_wait(self.linkwatch.fileno(), ovs.poller.POLLIN)
            if self.tunnels is not None and (fd := self.tunnels.fileno()) is not None:
                poller.fd_wait(fd, ovs.poller.POLLIN)
            retry = self.next_retry if self.errors or self.config_errors or self.reconcile_failed else 1e18
            wakeups = [self.next_stats, retry] if ready else []   # nothing to write while the database is away
            if self.server is not None:
                if (fd := self.server.exit_fd()) is not None:
                    poller.fd_wait(fd, ovs.poller.POLLIN)   # the private ovsdb-server exited
                if (due := self.server.next_wakeup()) is not None:
                    wakeups.append(due)
            if wakeups:
                poller.timer_wait(int(1000 * max(0.0, min(wakeups) - time.monotonic())) + 1)
            poller.block()
            if self.linkwatch is not None and self.linkwatch.drain():
                self.ports_changed = True
            try:
                while os.read(self._wake_r, 64):
                    pass
            except BlockingIOError:
                pass

    def _database_ready(self) -> bool:
        """The IDL is connected and in sync, so OVSDB can be read and written (a change is logged)."""
        session = getattr(self.idl, "_session", None)
        ready = (self.idl.has_ever_connected() and (session is None or session.is_connected())
                 and getattr(self.idl, "state", ovs.db.idl.Idl.IDL_S_MONITORING) == ovs.db.idl.Idl.IDL_S_MONITORING)
        if ready and not self.db_ready and self.db_lost_at is not None:
            log.warning("database %s is back after %.1f s; applying it", self.remote,
                        time.monotonic() - self.db_lost_at)
            self.db_lost_at = None
            self.last_seqno = -1   # apply and write back everything, cur_cfg included
        elif ready and not self.db_ready:
            log.info("connected to database %s", self.remote)
        elif not ready and self.db_ready:
            log.warning("lost the connection to database %s; forwarding goes on with the last configuration",
                        self.remote)
            self.db_lost_at = time.monotonic()
        self.db_ready = ready
        return ready

    def _name_threads(self) -> None:
        """The switch's threads carry their names in the kernel too (top -H, ps -L: datapath-br0, openflow-br0)."""
        for thread in threading.enumerate():
            tid = thread.native_id
            if tid is None or thread is threading.main_thread() or self.thread_names.get(tid) == thread.name:
                continue
            self.thread_names[tid] = thread.name
            try:
                with open(f"/proc/self/task/{tid}/comm", "wb") as f:
                    f.write(thread.name.encode()[:15])
            except OSError:   # the thread ended meanwhile
                pass

    # ------------------------------------------------------------ reconcile
    def _wanted(self) -> tuple[dict[str, object], dict[tuple[str, str], tuple[PortSpec, object]]]:
        bridges: dict[str, object] = {}
        ports: dict[tuple[str, str], tuple[PortSpec, object]] = {}
        for br in self.idl.tables["Bridge"].rows.values():
            bridges[br.name] = br
            for port in br.ports:
                for iface in port.interfaces:
                    try:
                        vlan = VlanConfig(tag=_opt(port.tag), trunks=tuple(port.trunks),
                                          vlan_mode=_opt(port.vlan_mode))
                    except VlanConfigError as exc:
                        self.errors[iface.name] = str(exc)
                        continue
                    options = tuple((k, iface.options[k]) for k in TYPE_OPTIONS.get(iface.type, ())
                                    if k in iface.options)
                    if iface.type == "patch" or iface.type in TUNNEL_TYPES:   # every option: each is checked
                        options = tuple(sorted(iface.options.items()))
                    if iface.ingress_policing_rate and iface.type != "sriov-vf" \
                            and iface.name not in self.policing_warned:
                        self.policing_warned.add(iface.name)
                        log.warning("%s: ingress_policing_rate is not supported on %s ports (only sriov-vf, where "
                                    "the VF's hardware limits its rate); ignored", iface.name, iface.type or "system")
                    if iface.type == "sriov-vf":   # the VF's hardware takes these: a change re-configures it
                        options += (("mac", _opt(iface.mac) or ""), ("tag", str(_opt(port.tag) or 0)),
                                    ("ingress_policing_rate", str(iface.ingress_policing_rate)))
                    spec = PortSpec(iface.name, iface.type, vlan, _opt(iface.ofport_request), options)
                    ports[(br.name, iface.name)] = (spec, iface)
        return bridges, ports

    def reconcile(self) -> None:
        """Apply the difference between OVSDB and the running bridges, then write back the results."""
        bridges, wanted = self._wanted()
        for name in list(self.bridges):
            if name not in bridges:
                agent = self.agents.pop(name, None)
                if agent is not None:
                    agent.close()
                    agent.tlv_map.release()     # a bridge's TLV map goes with it, as in OVS
                for port in [n for n, bp in self.bridges[name].ports.items() if isinstance(bp.port, SriovVfPort)]:
                    self._del_port(self.bridges[name], port, deleted=True)
                self.bridges.pop(name).close()
                self.specs = {k: v for k, v in self.specs.items() if k[0] != name}
                log.info("deleted bridge %s", name)
        for name, row in bridges.items():
            size = _bounded(row.other_config, "mac-table-size", 8192, MAC_TABLE_MIN, MAC_TABLE_MAX, name)
            aging = _bounded(row.other_config, "mac-aging-time", 300, 1, MAC_AGING_MAX, name)
            secure = _opt(row.fail_mode) == "secure"   # in the datapath before a port attaches or changes
            br = self.bridges.get(name)
            if br is None:
                br = self.bridges[name] = Bridge(name, mac_table_size=size, mac_aging_time=aging, fail_secure=secure,
                                                 datapath=self._datapath())
                log.info("created bridge %s", name)
            else:
                br.set_fail_secure(secure)
                br.set_mac_table(size, aging)
            if name not in self.agents:   # with the bridge, or on a retry when it could not start then
                self.agents[name] = OfAgent(br, self.rundir, lambda br=br: self.datapath_id(br), self._port_changed)
        # Ports that went away or changed type.
        for key, spec in list(self.specs.items()):
            br_name, iface = key
            new = wanted.get(key)
            if new is None or new[0].type != spec.type or new[0].options != spec.options:
                br = self.bridges.get(br_name)
                if br is not None and iface in br.ports:
                    old_opts, new_opts = dict(spec.options), dict(new[0].options) if new else {}
                    same_vf = new is not None and all(old_opts.get(k) == new_opts.get(k) for k in ("pf", "vf"))
                    self._del_port(br, iface, deleted=not same_vf)
                del self.specs[key]
                self.status_done.discard(iface)
        for br in self.bridges.values():   # a passed-through VF whose PF's port went away: retried until it is back
            for bp in list(br.ports.values()):
                if bp.via is not None and bp.via[0] not in br.ports:
                    self._del_port(br, bp.name, deleted=False)
                    self.specs.pop((br.name, bp.name), None)
        self._apply_num_vfs()
        for key, (spec, row) in wanted.items():
            br_name, iface = key
            br = self.bridges[br_name]
            old = self.specs.get(key)
            if old is not None and iface in br.ports:
                if old.vlan != spec.vlan:
                    br.set_vlan(iface, spec.vlan)
                self.specs[key] = spec
                continue
            self._add_port(br, spec, row)
        for name, row in bridges.items():   # after the ports: a controller's first look sees them (and the dpid)
            rates = [r for c in row.controller if (r := _opt(c.controller_rate_limit))]
            bursts = [b for c in row.controller if (b := _opt(c.controller_burst_limit))]
            agent = self.agents[name]
            self._configure_identity(self.bridges[name], row, agent)
            self.bridges[name].sync_link_state()
            agent.ports_changed()
            agent.configure(_opt(row.fail_mode) or "standalone",
                            [(c.target, (_opt(c.inactivity_probe) or 5000) / 1000, (_opt(c.max_backoff) or 8000) / 1000)
                             for c in row.controller],
                            max(rates) if rates else None, max(bursts) if bursts else None)
        self.reconcile_failed = False   # all of it applied: cur_cfg may say so
        self.write_back()

    def _tunnel_ports(self) -> list[TunnelPort]:
        """Every bridge's tunnel ports."""
        return [bp.port for br in self.bridges.values() for bp in br.ports.values() if isinstance(bp.port, TunnelPort)]

    def _datapath(self) -> Datapath:
        """The datapath of every bridge, started the first time it is needed."""
        if self.datapath is None:
            self.datapath = Datapath("ovs-netdev")
            self.datapath.start()
            if self.tunnels is not None:
                self.tunnels.attach(self.datapath)
        return self.datapath

    def _configure_identity(self, br: Bridge, row: object, agent: OfAgent) -> None:
        """What identifies the bridge to OpenFlow, as ovs-vswitchd sets it: the LOCAL port's MAC (``_bridge_mac``),
        the datapath ID (``other_config:datapath-id``, else that MAC) and the versions (``protocols``).
        ``other_config:disable-in-band`` is accepted as it is: pyvswitch has no in-band control to disable."""
        mac = self._bridge_mac(br, row)
        local = next((bp for bp in br.ports.values() if bp.ofport == OFPP_LOCAL), None)
        if local is not None and local.port.type == "internal" and local.port.mac != format_mac(mac):
            try:
                set_link(local.name, mac=format_mac(mac))
            except PortError as exc:
                self._identity_warning(br.name, "hwaddr", format_mac(mac), f"cannot set the MAC of {local.name} to "
                                                                           f"{format_mac(mac)}: {exc}")
        text = row.other_config.get("datapath-id")
        dpid = None if text is None else parse_dpid(text)
        if text is not None and dpid is None:
            self._identity_warning(br.name, "datapath-id", text, f"other_config:datapath-id={text!r} is not 16 hex "
                                   "digits (or 0x and at most 16) or is zero; ignored")
        dpid = dpid or mac
        if dpid != agent.dpid:
            log.info("bridge %s: using datapath ID %016x", br.name, dpid)
            agent.set_datapath_id(dpid)
        agent.set_protocols(list(row.protocols))

    def _bridge_mac(self, br: Bridge, row: object) -> int:
        """The bridge's MAC as ovs-vswitchd picks it: ``other_config:hwaddr`` (unless multicast or zero); else the
        lowest universally administered unicast MAC of its other ports; else ``default_bridge_mac``."""
        text = row.other_config.get("hwaddr")
        if text:
            try:
                mac = parse_mac(text)
            except BridgeError:
                mac = -1
            if mac > 0 and not mac >> 40 & 1:
                return mac
            why = "is a multicast address" if mac > 0 else "is zero" if mac == 0 else "is not a MAC address"
            self._identity_warning(br.name, "hwaddr", text, f"other_config:hwaddr={text!r} {why}; ignored")
        best = None
        for bp in list(br.ports.values()):
            try:
                mac = parse_mac(bp.port.mac) if bp.ofport != OFPP_LOCAL else 0
            except BridgeError:   # no MAC (a vhost-user port)
                continue
            if mac and not mac >> 40 & 3 and (best is None or mac < best):
                best = mac
        return best if best is not None else default_bridge_mac(row.uuid)

    def _identity_warning(self, bridge: str, key: str, value: str, message: str) -> None:
        """Log ``message`` about a bridge's ``key`` once per value."""
        if (bridge, key, value) not in self.identity_warned:
            self.identity_warned.add((bridge, key, value))
            log.warning("bridge %s: %s", bridge, message)

    def _del_port(self, br: Bridge, name: str, deleted: bool) -> None:
        """Close port ``name``. A VF deleted from OVSDB gets back its MAC, VLAN, rate, ... from before the
        switch took it; a VF that is only re-opened keeps that record for when it is deleted."""
        port = br.ports[name].port
        br.del_port(name)
        if isinstance(port, SriovVfPort):
            key = (port.pf.netdev, port.vf.index)
            before = self.vf_before.pop(key, port.before)
            if deleted:
                port.before = before
                port.release()
            else:
                self.vf_before[key] = before

    def _add_port(self, br: Bridge, spec: PortSpec, row: object) -> None:
        self.specs[(br.name, spec.iface)] = spec
        if spec.type not in SUPPORTED_TYPES:
            self._port_error(spec.iface, f"could not open network device {spec.iface} (unsupported interface type "
                                         f"{spec.type!r}; supported: {', '.join(t for t in SUPPORTED_TYPES if t)})")
            return
        if spec.type == "patch":
            problem = patch_problem(spec.iface, dict(spec.options))
            if problem:
                self._port_error(spec.iface, problem)
                return
        if spec.type in TUNNEL_TYPES:
            problem = self._tunnel_problem(br, spec)
            if problem:
                self._port_error(spec.iface, problem)
                return
        try:
            options = self._port_options(spec)
            self._check_topology(br, spec, options)
        except PortError as exc:
            self._port_error(spec.iface, f"could not open network device {spec.iface} ({exc})")
            return
        ofport = spec.ofport_request
        if ofport is None and spec.iface == br.name:
            ofport = OFPP_LOCAL
        if ofport is None:
            previous = _opt(row.ofport)
            used = {p.ofport for p in br.ports.values()}
            if previous and previous > 0 and previous not in used:
                ofport = previous
        try:
            bp = br.add_port(spec.iface, spec.type or "system", spec.vlan, ofport=ofport, **options)
        except (PortError, BridgeError, OSError) as exc:
            self._port_error(spec.iface, f"could not open network device {spec.iface} ({exc})")
            return
        bp.port.on_change = self._port_changed
        if isinstance(bp.port, SriovVfPort) and (bp.port.pf.netdev, bp.port.vf.index) in self.vf_before:
            bp.port.before = self.vf_before.pop((bp.port.pf.netdev, bp.port.vf.index))
        if isinstance(bp.port, SriovVfPort) and bp.port.mode == "passthrough":
            try:
                self._reach_vf(br, bp.port, spec)
            except (SriovError, BridgeError) as exc:
                self._del_port(br, spec.iface, deleted=False)
                self._port_error(spec.iface, f"could not open network device {spec.iface} ({exc})")
                return
        if spec.iface in self.errors:
            log.info("opened %s after an earlier error", spec.iface)
        self.errors.pop(spec.iface, None)

    def _port_error(self, iface: str, message: str) -> None:
        """``Interface.error`` for a port that cannot open (retried every RETRY_INTERVAL), logged once per
        message (ovs-vsctl points to the log)."""
        if self.errors.get(iface) != message:
            log.warning("%s; retrying every %.0f s", message, RETRY_INTERVAL)
        self.errors[iface] = message

    def _port_options(self, spec: PortSpec) -> dict[str, object]:
        """Backend options for a port type, from ``Interface.options`` and the rundir."""
        if spec.type == "dpdkvhostuser":
            if "/" in spec.iface or spec.iface in (".", ".."):
                raise PortError(f"a dpdkvhostuser port's name becomes its socket's name in {self.rundir}: "
                                f"{spec.iface!r} cannot be a file name")
            return {"socket_path": os.path.join(self.rundir, spec.iface)}
        if spec.type == "dpdkvhostuserclient":
            path = dict(spec.options).get("vhost-server-path", "")
            if not path:
                raise PortError("dpdkvhostuserclient needs options:vhost-server-path (the front-end's socket)")
            return {"socket_path": path}
        if spec.type == "sriov-vf":
            return self._vf_options(spec)
        if spec.type == "patch":
            return {"peer": dict(spec.options)["peer"]}
        if spec.type in TUNNEL_TYPES:
            return dict(spec.options)
        return {}

    def _tunnel_problem(self, br: Bridge, spec: PortSpec) -> str:
        """Why tunnel port ``spec`` cannot be added (OVS's words), or "": its options as OVS checks them (the
        warnings logged once), and no other tunnel port receives what it would (OVS: "File exists")."""
        try:
            config, warnings = parse_tunnel_config(spec.iface, spec.type, dict(spec.options))
        except PortError as exc:
            return str(exc)
        for w in warnings:
            if (spec.iface, "", w) not in self.identity_warned:
                self.identity_warned.add((spec.iface, "", w))
                log.warning("%s", w)
        for other in self.bridges.values():
            for bp in other.ports.values():
                if isinstance(bp.port, TunnelPort) and bp.name != spec.iface and bp.port.config.receives_same(config):
                    log.warning("%s: attempting to add tunnel port with same config as port '%s'", spec.iface,
                                bp.name)
                    return f"could not add network device {spec.iface} to ofproto (File exists)"
        return ""

    # ------------------------------------------------------------ SR-IOV
    def _netlink(self) -> VfNetlink:
        if self.vf_netlink is None:
            self.vf_netlink = VfNetlink.open(self.netlink_spec)
        return self.vf_netlink

    def _vf_options(self, spec: PortSpec) -> dict[str, object]:
        """``SriovVfPort`` keywords from the Interface's options, ``mac``, ``ingress_policing_rate`` and
        ``Port.tag``; PortError for a value no VF can take."""
        opts = dict(spec.options)
        out: dict[str, object] = {"pf": opts.get("pf", ""), "sysfs": self.sysfs, "netlink": self._netlink()}
        if not out["pf"] or "vf" not in opts:
            raise SriovError("a sriov-vf interface needs options:pf=PF_NETDEV and options:vf=INDEX")
        for key, (kw, lo, hi) in VF_NUMBERS.items():
            if key in opts:
                try:
                    value = int(opts[key])
                except ValueError:
                    raise SriovError(f"options:{key}={opts[key]!r} is not a number") from None
                if not lo <= value <= hi:
                    raise SriovError(f"options:{key}={value} is outside {lo}..{hi}")
                out[kw] = value
        out["policing_kbps"] = int(opts.get("ingress_policing_rate", "0"))
        for key in ("spoofchk", "trust"):
            if key in opts:
                if opts[key] not in ("true", "false"):
                    raise SriovError(f"options:{key} is true or false, not {opts[key]!r}")
                out[key] = opts[key] == "true"
        if "link-state" in opts:
            if opts["link-state"] not in LINK_STATES:
                raise SriovError(f"options:link-state is auto, enable or disable, not {opts['link-state']!r}")
            out["link_state"] = opts["link-state"]
        if "vlan-proto" in opts:
            if opts["vlan-proto"].lower() not in VLAN_PROTOS:
                raise SriovError(f"options:vlan-proto is 802.1q or 802.1ad, not {opts['vlan-proto']!r}")
            out["vlan_proto"] = opts["vlan-proto"].lower()
        if opts.get("mac"):
            try:
                if parse_mac(opts["mac"]) >> 40 & 1:
                    raise SriovError(f"mac {opts['mac']} is a multicast address: a VF needs a unicast MAC")
            except BridgeError as exc:
                raise SriovError(str(exc)) from None
            out["mac"] = opts["mac"]
        switchdev = representor(out["pf"], int(opts["vf"]), self.sysfs)   # then VLANs are the bridge's
        if not switchdev and (spec.vlan.trunks or spec.vlan.vlan_mode not in (None, "access")):
            raise SriovError("a VF's hardware takes one VLAN: set Port tag (no trunks, vlan_mode access)")
        out["tag"] = int(opts.get("tag", "0"))
        if out["tag"] > 4094:
            raise SriovError(f"Port tag {out['tag']} is outside 1..4094, the VLANs a VF can take")
        for (_br, other), other_spec in self.specs.items():
            o = dict(other_spec.options)
            if other != spec.iface and other_spec.type == "sriov-vf" and other not in self.errors \
                    and o.get("pf") == out["pf"] and o.get("vf") == opts["vf"]:
                raise SriovError(f"VF {opts['vf']} of {out['pf']} is in use by interface {other}")
        return out

    def _check_topology(self, br: Bridge, spec: PortSpec, options: dict[str, object]) -> None:
        """SriovError, before any hardware is touched, for a passed-through VF whose PF is not a port of ``br``
        (nothing would reach it), and for a host-use VF and its PF on one bridge (a loop through the NIC's
        built-in switch, which copies broadcasts between the PF and its VFs)."""
        if spec.type == "sriov-vf":
            vf = virtual_function(str(options["pf"]), int(options["vf"]), self.sysfs)
            if vf.mode == "passthrough" and vf.pf not in br.ports:
                raise SriovError(f"{vf.describe()} is passed through to a guest and reached through its PF, but "
                                 f"{vf.pf} is not a port of bridge {br.name}: ovs-vsctl add-port {br.name} {vf.pf}")
            if vf.mode == "host" and vf.pf in br.ports:
                raise SriovError(f"{vf.describe()} and its PF {vf.pf} on one bridge would make a loop through the "
                                 "NIC's built-in switch: put the VF on another bridge, or pass it through")
            return
        for bp in br.ports.values():
            if isinstance(bp.port, SriovVfPort) and bp.port.mode == "host" and bp.port.pf.netdev == spec.iface:
                raise SriovError(f"{spec.iface} is the PF of {bp.port.vf.describe()} (port {bp.name}) on this bridge: "
                                 "the two would make a loop through the NIC's built-in switch")

    def _reach_vf(self, br: Bridge, port: SriovVfPort, spec: PortSpec) -> None:
        """A passed-through VF is reached through its PF's port (``_check_topology`` made sure it is one of
        ``br``'s): a static entry for its MAC there."""
        mac = port.config.mac or str(port.hardware().get("mac", ""))
        if not mac or mac == "00:00:00:00:00:00":
            raise SriovError(f"{port.vf.describe()} has no MAC: set one (ovs-vsctl set Interface {spec.iface} "
                             "mac='\"52:54:00:12:34:56\"') so the switch knows where its guest is")
        br.reach_through(spec.iface, port.pf.netdev, mac, port.config.vlan)

    def _apply_num_vfs(self) -> None:
        """``options:num-vfs`` of every Interface (a PF): write ``sriov_numvfs`` when it differs."""
        for iface in self.idl.tables["Interface"].rows.values():
            text = iface.options.get("num-vfs")
            if text is None:
                self.config_errors.pop(iface.name, None)
                continue
            busy = {}
            for br in self.bridges.values():
                for bp in br.ports.values():
                    if isinstance(bp.port, SriovVfPort) and bp.port.pf.netdev == iface.name:
                        busy[bp.port.vf.index] = f"interface {bp.name} of bridge {br.name}"
            try:
                if not re.fullmatch(r"[0-9]{1,4}", text):
                    raise SriovError(f"options:num-vfs={text!r} is not a count of VFs (0 or more)")
                if set_num_vfs(iface.name, int(text), self.sysfs, busy):
                    log.info("%s: %s VFs enabled (options:num-vfs)", iface.name, text)
                self.config_errors.pop(iface.name, None)
            except SriovError as exc:
                message = f"options:num-vfs not applied: {exc}"
                if self.config_errors.get(iface.name) != message:
                    log.warning("%s: %s", iface.name, message)
                self.config_errors[iface.name] = message

    def _port_changed(self) -> None:
        """A port's status changed by itself (any thread): write it back on the next loop."""
        self.ports_changed = True
        try:
            os.write(self._wake_w, b"p")
        except OSError:
            pass

    # ------------------------------------------------------------ write back
    def write_back(self) -> None:
        """Interface results, Bridge.datapath_id, ovs_version and cur_cfg = next_cfg."""
        txn = ovs.db.idl.Transaction(self.idl)
        try:
            self._fill_write_back()
        except BaseException:
            txn.abort()   # an open transaction would stop the IDL for good
            raise
        status = txn.commit_block()
        if status not in (ovs.db.idl.Transaction.SUCCESS, ovs.db.idl.Transaction.UNCHANGED):
            log.warning("writing back to OVSDB failed: %s (%s)", status, txn.get_error())
            self.last_seqno = -1  # try again on the next loop

    def _fill_write_back(self) -> None:
        ports = {}
        for br in self.bridges.values():
            for bp in br.ports.values():
                ports[bp.name] = bp
        for iface in self.idl.tables["Interface"].rows.values():
            bp = ports.get(iface.name)
            if bp is not None:
                port = bp.port
                want = {
                    "ofport": [bp.ofport], "ifindex": [port.ifindex], "mac_in_use": [port.mac] if port.mac else [],
                    "admin_state": ["up" if bp.admin_up else "down"],
                    "link_state": ["up" if port.link_up else "down"],
                    "error": [e] if (e := port.error or self.config_errors.get(bp.name)) else [],
                    "link_speed": _link_speed(bp.name),
                }
                status = port.status()
                if status is not None:
                    want["status"] = status
                elif bp.name not in self.status_done:
                    want["status"] = _link_status(bp.name)
                    self.status_done.add(bp.name)
            elif iface.name in self.errors:
                want = {"ofport": [-1], "error": [self.errors[iface.name]], "admin_state": [], "link_state": []}
            elif iface.name in self.config_errors:   # a PF that is no port of ours
                want = {"error": [self.config_errors[iface.name]]}
            else:
                continue
            for column, value in want.items():
                if getattr(iface, column) != value:
                    setattr(iface, column, value)
        for row in self.idl.tables["Bridge"].rows.values():
            br = self.bridges.get(row.name)
            if br is not None:
                dpid = f"{self.datapath_id(br):016x}"
                if _opt(row.datapath_id) != dpid:
                    row.datapath_id = [dpid]
        controllers = {}
        for name, agent in self.agents.items():
            for target, st in agent.controller_status().items():
                controllers[(name, target)] = st
        for row in self.idl.tables["Bridge"].rows.values():
            for c in row.controller:
                st = controllers.get((row.name, c.target))
                if st is None:
                    continue
                if c.is_connected != st["is_connected"]:
                    c.is_connected = st["is_connected"]
                if _opt(c.role) != st["role"]:
                    c.role = [st["role"]]
                if c.status != st["status"]:
                    c.status = st["status"]
        for root in self.idl.tables["Open_vSwitch"].rows.values():
            if root.cur_cfg != root.next_cfg and not self.reconcile_failed:   # only once it is all applied
                root.cur_cfg = root.next_cfg
            if _opt(root.ovs_version) != __version__:
                root.ovs_version = [__version__]
            if list(root.iface_types) != IFACE_TYPES:
                root.iface_types = IFACE_TYPES

    def datapath_id(self, br: Bridge) -> int:
        """``Bridge.datapath_id``: the one configured (``_configure_identity``), else the MAC of the LOCAL port."""
        agent = self.agents.get(br.name)
        if agent is not None and agent.dpid:
            return agent.dpid
        local = br.ports.get(br.name)
        mac = (local.port.mac if local else "") or "00:00:00:00:00:00"
        return int(mac.replace(":", ""), 16)

    def stats_interval(self) -> float:
        """Seconds between statistics updates: ``Open_vSwitch other_config:stats-update-interval`` (ms, >= 5000)."""
        for root in self.idl.tables["Open_vSwitch"].rows.values():
            try:
                return max(5000, int(root.other_config.get("stats-update-interval", 5000))) / 1000
            except ValueError:
                pass
        return STATS_INTERVAL

    def write_statistics(self) -> None:
        """Interface.statistics from the port counters (OVS's stats-update-interval, 5 s)."""
        stats = {}
        for br in self.bridges.values():
            for name in br.ports:
                stats[name] = br.port_stats(name)
        if not stats:
            return
        txn = ovs.db.idl.Transaction(self.idl)
        for iface in self.idl.tables["Interface"].rows.values():
            if iface.name in stats:
                iface.statistics = {k: v for k, v in stats[iface.name].items()}
        txn.commit_block()


def run_daemon(rundir: str, db: str | None, pidfile: str = "", on_started: Callable[[], None] | None = None,
               sysfs: str = SYSFS_ROOT, netlink: str = "") -> int:
    """Start, serve and close a daemon; returns the exit code."""
    daemon = Daemon(rundir, db, pidfile, sysfs, netlink)
    try:
        daemon.start()
        if daemon.wait_for_database(DATABASE_WAIT):
            print(f"pyvswitch: running, rundir {daemon.rundir}, database {daemon.remote}, pid {os.getpid()}",
                  flush=True)
        else:
            print(f"pyvswitch: waiting for the database {daemon.remote} (nothing answers there yet); it starts "
                  f"switching once it does; rundir {daemon.rundir}, pid {os.getpid()}", flush=True)
            log.warning("waiting for the database %s: nothing answers there yet", daemon.remote)
        if on_started is not None:
            on_started()
        daemon.run()
        return 0
    except (DaemonError, OvsdbServerError) as exc:
        print(f"pyvswitch run: {exc}", flush=True)
        log.error("%s", exc)
        return 1
    except Exception:
        log.exception("pyvswitch run failed")
        raise
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            print(f"pyvswitch run: {exc}", flush=True)
            return 1
        raise
    finally:
        daemon.close()
