"""Bridges: named sets of ports with OVS VLAN settings over the shared datapath, counters and the MAC table view."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from backends import open_port
from backends.port import PORT_COUNTER_NAMES, PORT_DROP_REASONS, Port, PortError
from classifier.drops import DROP_NAMES
from classifier.l2table import (
    DEFAULT_AGING,
    DEFAULT_LIMIT,
    I_AGING,
    I_LEARNED,
    I_LEARNED_COUNT,
    I_LIMIT,
    I_STATIC_COUNT,
    INFO_NAMES,
    l2_add_static,
    l2_entries,
    l2_flush,
    l2_remove,
)
from dpif.actions import DROP_REASONS
from vswitch.datapath import Datapath
from vswitch.dpbridge import DpBridge
from vswitch.vlan import VlanConfig, fill_vlan_map
from xlate.bridges import PF_DOWN, PF_LINK_DOWN, PF_LOCAL

log = logging.getLogger(__name__)

LOCAL_OFPORT = 65534      # the bridge's own internal port (OpenFlow LOCAL)
#: flow-table drop reasons as counter names (prefixed: "tx_queue_full" is also a port's own reason)
FLOW_DROP_NAMES = {i: f"flow_{name}" for i, name in enumerate(DROP_REASONS)}


class BridgeError(Exception):
    """A bridge operation that cannot be done; the message says why."""


@dataclass
class BridgePort:
    """A port of a bridge: its backend, OpenFlow number and VLAN settings."""

    name: str
    port: Port
    ofport: int
    vlan: VlanConfig = field(default_factory=VlanConfig)
    admin_up: bool = True
    #: ``(port, mac, vlan)`` when the switch reaches this port's device through another port (a passed-through
    #: VF, reached through its PF's port): a static MAC entry on that port, and no floods to this one.
    via: tuple[str, str, int] | None = None

    @property
    def port_no(self) -> int:
        return self.port.port_no


def parse_mac(text: str) -> int:
    """``aa:bb:cc:dd:ee:ff`` as an integer, with a clear error for anything else."""
    parts = text.split(":")
    if len(parts) != 6 or not all(len(p) in (1, 2) for p in parts):
        raise BridgeError(f"{text!r} is not a MAC address like 52:54:00:12:34:56")
    try:
        return int("".join(p.zfill(2) for p in parts), 16)
    except ValueError:
        raise BridgeError(f"{text!r} is not a MAC address like 52:54:00:12:34:56") from None


def format_mac(mac: int) -> str:
    """An integer MAC as ``aa:bb:cc:dd:ee:ff``."""
    return ":".join(f"{(mac >> s) & 0xFF:02x}" for s in range(40, -8, -8))


class Bridge:
    """An L2 switch over a datapath: ports, VLANs, MAC learning (OVS's NORMAL action), OpenFlow's view.

    ``datapath``: the datapath every bridge of the switch shares (the daemon's); without one the bridge
    runs a datapath of its own, started here and closed with it.
    """

    def __init__(
        self,
        name: str,
        mac_table_size: int = DEFAULT_LIMIT,
        mac_aging_time: int = DEFAULT_AGING,
        n_slots: int = 8192,
        slot_size: int = 2048,
        fail_secure: bool = False,
        datapath: Datapath | None = None,
    ) -> None:
        self.name = name
        self._own_datapath = datapath is None
        if datapath is None:
            datapath = Datapath(name, n_slots, slot_size, thread_name=f"datapath-{name}")
            datapath.start()
        self.datapath = datapath
        # a secure bridge is secure in the datapath before its first port exists (see vswitch.dpbridge)
        self.dp: DpBridge = datapath.add_bridge(name, mac_table_size, mac_aging_time, fail_secure=fail_secure)
        self.ports: dict[str, BridgePort] = {}

    # ------------------------------------------------------------ ports
    def add_port(
        self,
        name: str,
        type: str = "system",
        vlan: VlanConfig | None = None,
        ofport: int | None = None,
        **options: object,
    ) -> BridgePort:
        """Open the device ``name`` as a port of ``type`` and start switching it."""
        if name in self.ports:
            raise BridgeError(f"bridge {self.name} already has a port named {name}")
        used = {p.ofport for p in self.ports.values()}
        if ofport is None:
            ofport = next(i for i in range(1, 65280) if i not in used)
        elif ofport in used or not (1 <= ofport < 65280 or ofport == 65534):
            raise BridgeError(f"ofport {ofport} is in use or outside 1..65279 (65534 is the bridge's LOCAL port)")
        port = open_port(type, name, **options)
        bp = BridgePort(name, port, ofport, vlan or VlanConfig())
        try:
            self.dp.call(lambda: self._attach(bp))
        except BaseException:
            port.close()
            raise
        self.ports[name] = bp
        log.info("bridge %s: added %s port %s (ofport %d, %s)", self.name, type, name, ofport,
                 bp.vlan.describe())
        return bp

    def _attach(self, bp: BridgePort) -> None:
        port_no = self.dp.attach(bp.port)
        fill_vlan_map(self.dp.vlan_map, port_no, bp.vlan, bp.admin_up)
        self.dp.set_port_flag(port_no, PF_LOCAL, bp.ofport == LOCAL_OFPORT)
        self.dp.set_port_flag(port_no, PF_DOWN, not bp.admin_up)

    def del_port(self, name: str) -> None:
        """Stop switching ``name``, forget its MACs and close the device."""
        bp = self.ports.pop(name, None)
        if bp is None:
            raise BridgeError(f"bridge {self.name} has no port named {name}")
        if bp.via is not None:
            self.del_static_mac(bp.via[1], bp.via[2])
        self.dp.call(lambda: self.dp.detach(bp.port))
        bp.port.close()
        log.info("bridge %s: removed port %s", self.name, name)

    def reach_through(self, name: str, via: str, mac: str, vlan: int) -> None:
        """Reach port ``name``'s device through port ``via``: ``mac`` in ``vlan`` becomes a static entry on
        ``via``, and ``name`` gets no floods (the device, a passed-through VF, hears them through ``via``)."""
        bp, through = self._port(name), self._port(via)

        def apply() -> None:
            fill_vlan_map(self.dp.vlan_map, bp.port_no, None, True)
            l2_flush(self.dp.l2, self.dp.l2_info, bp.port_no, True)

        self.dp.call(apply)
        self.add_static_mac(through.name, mac, vlan)
        bp.via = (via, mac, vlan)
        log.info("bridge %s: %s (%s, VLAN %d) is reached through %s", self.name, name, mac, vlan, via)

    def set_vlan(self, name: str, vlan: VlanConfig) -> None:
        """Change a port's ``tag``/``trunks``/``vlan_mode``; its learned MACs are forgotten."""
        bp = self._port(name)
        bp.vlan = vlan

        def apply() -> None:
            fill_vlan_map(self.dp.vlan_map, bp.port_no, None if bp.via else vlan, bp.admin_up)
            l2_flush(self.dp.l2, self.dp.l2_info, bp.port_no, False)

        self.dp.call(apply)

    def sync_link_state(self) -> None:
        """Each port's link state (carrier) into the datapath's flags, for group liveness (OVS's: a bucket watching
        a port whose link is down is dead); megaflows are flushed when one changes."""
        downs = [(bp.port_no, not bp.port.link_up) for bp in self.ports.values()]

        def apply() -> None:
            for port_no, down in downs:
                self.dp.set_port_flag(port_no, PF_LINK_DOWN, down)

        self.dp.call(apply)

    def set_admin_state(self, name: str, up: bool) -> None:
        """Enable or disable forwarding on a port (OVS ``admin_state``)."""
        bp = self._port(name)
        bp.admin_up = up

        def apply() -> None:
            fill_vlan_map(self.dp.vlan_map, bp.port_no, None if bp.via else bp.vlan, up)
            self.dp.set_port_flag(bp.port_no, PF_DOWN, not up)

        self.dp.call(apply)

    def _port(self, name: str) -> BridgePort:
        try:
            return self.ports[name]
        except KeyError:
            raise BridgeError(f"bridge {self.name} has no port named {name}") from None

    # ------------------------------------------------------------ MAC table
    def add_static_mac(self, port: str, mac: str, vlan: int = 0) -> None:
        """Pin ``mac`` in ``vlan`` to ``port`` (a VM's configured MAC): never aged, never moved."""
        bp = self._port(port)
        value = parse_mac(mac)
        if not self.dp.call(lambda: l2_add_static(self.dp.l2, self.dp.l2_info, vlan, np.uint64(value),
                                                  bp.port_no)):
            raise BridgeError(f"bridge {self.name}: no room for more static MAC entries")

    def del_static_mac(self, mac: str, vlan: int = 0) -> bool:
        """Remove a MAC entry (static or learned); False when there was none."""
        value = parse_mac(mac)
        return bool(self.dp.call(lambda: l2_remove(self.dp.l2, self.dp.l2_info, vlan, np.uint64(value))))

    def fdb_flush(self) -> int:
        """Forget every learned MAC; returns how many."""
        return int(self.dp.call(lambda: l2_flush(self.dp.l2, self.dp.l2_info, -1, False)))

    def set_fail_secure(self, on: bool) -> None:
        """``fail_mode=secure`` (``on``) or standalone, in force in the datapath when this returns."""
        if on != self.dp.fail_secure:
            self.dp.set_fail_secure(on)
            log.info("bridge %s: fail mode %s", self.name, "secure" if on else "standalone")

    def set_mac_table(self, size: int | None = None, aging: int | None = None) -> None:
        """Apply ``other_config:mac-table-size`` / ``mac-aging-time``."""
        info = self.dp.l2_info
        new_size = int(info[I_LIMIT]) if size is None else size
        new_aging = int(info[I_AGING]) if aging is None else aging
        if new_size < 1 or new_aging < 1:
            raise BridgeError("mac-table-size and mac-aging-time must be positive")
        self.dp.call(lambda: self.dp.set_mac_table(new_size, new_aging))

    def fdb(self) -> list[dict[str, object]]:
        """Entries of the MAC table: ofport, port name, VLAN, MAC, age in seconds, static."""
        by_no = {bp.port_no: bp for bp in self.ports.values()}
        l2 = self.dp.call(lambda: self.dp.l2.copy())
        out = []
        for port_no, vlan, mac, age, static in l2_entries(l2, self.dp.now()):
            bp = by_no.get(port_no)
            out.append({
                "ofport": bp.ofport if bp else -1, "port": bp.name if bp else "?", "vlan": vlan,
                "mac": format_mac(mac), "age": age, "static": static,
            })
        out.sort(key=lambda e: (e["ofport"], e["vlan"], e["mac"]))
        return out

    def fdb_show(self) -> str:
        """The MAC table in ``ovs-appctl fdb/show`` format."""
        lines = [" port  VLAN  MAC                Age"]
        for e in self.fdb():
            age = "static" if e["static"] else str(e["age"])
            lines.append(f"{e['ofport']:>5}  {e['vlan']:>4}  {e['mac']}  {age:>4}")
        return "\n".join(lines) + "\n"

    def clear_fdb_stats(self) -> None:
        """Zero the MAC table's event counters (``fdb/stats-clear``)."""
        self.dp.call(lambda: self.dp.l2_info.__setitem__(slice(I_LEARNED, None), 0))

    def fdb_stats(self) -> dict[str, int]:
        """MAC table sizes and event counters (``fdb/stats-show``)."""
        info = self.dp.l2_info
        out = {
            "current": int(info[I_LEARNED_COUNT] + info[I_STATIC_COUNT]),
            "static": int(info[I_STATIC_COUNT]),
            "max": int(info[I_LIMIT]),
            "aging_time": int(info[I_AGING]),
        }
        out.update({name: int(info[i]) for name, i in INFO_NAMES.items()})
        return out

    # ------------------------------------------------------------ counters
    def port_stats(self, name: str) -> dict[str, int]:
        """OVS-style statistics of a port plus its named drop reasons (datapath drops included)."""
        bp = self._port(name)
        stats = bp.port.stats()
        drops = self._datapath_drops(bp.port_no)
        stats.update(drops)
        stats["rx_dropped"] += sum(drops.values())
        return stats

    def _datapath_drops(self, port_no: int) -> dict[str, int]:
        """The classifier's and the flow tables' named drops of frames received on ``port_no``."""
        row, frow = self.dp.drops[port_no], self.dp.fdrops[port_no]
        out = {rname: int(row[reason]) for reason, rname in DROP_NAMES.items()}
        out.update({rname: int(frow[reason]) for reason, rname in FLOW_DROP_NAMES.items()})
        return out

    def drop_stats(self) -> dict[str, int]:
        """Every named drop reason summed over the bridge's ports."""
        out = dict.fromkeys(list(DROP_NAMES.values()) + list(FLOW_DROP_NAMES.values()) + list(PORT_DROP_REASONS), 0)
        for bp in self.ports.values():
            for rname, count in self._datapath_drops(bp.port_no).items():
                out[rname] += count
            for rname, i in PORT_DROP_REASONS.items():
                out[rname] += int(bp.port.counters[i])
        out["mac_table_full"] = int(self.dp.l2_info[INFO_NAMES["table_full"]])
        out.update(self.dp.dp_drops)
        return out

    def stats_table(self) -> str:
        """Per-port counters as a text table."""
        cols = list(PORT_COUNTER_NAMES)
        width = max([len(n) for n in self.ports] + [4])
        lines = [f"{'port':<{width}} ofport " + " ".join(f"{c:>11}" for c in cols)]
        for name, bp in sorted(self.ports.items(), key=lambda kv: kv[1].ofport):
            s = self.port_stats(name)
            lines.append(f"{name:<{width}} {bp.ofport:>6} " + " ".join(f"{s[c]:>11}" for c in cols))
        return "\n".join(lines) + "\n"

    # ------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Take the bridge out of the datapath and close every port (and its own datapath, if it has one)."""
        try:
            self.datapath.remove_bridge(self.dp)   # its ports are detached first
        except TimeoutError:
            log.exception("bridge %s: the datapath did not let go of it", self.name)
        for bp in list(self.ports.values()):
            try:
                bp.port.close()
            except (OSError, PortError):
                log.exception("bridge %s: closing %s failed", self.name, bp.name)
        self.ports.clear()
        if self._own_datapath:
            self.datapath.close()
