"""Every numba kernel the switch can run, loaded (or compiled) before it forwards or applies configuration.

A kernel compiles on its first call unless numba's on-disk cache holds it; on a cold cache (first run
after install, an upgrade, a new ``NUMBA_CACHE_DIR``) that takes tens of seconds, and a thread that
compiles in the middle of forwarding or of a control call stalls. So the daemon calls
``warm_up_kernels()`` once at start-up, before it reads the database, and ``make`` runs
``python -m vswitch.warmup`` so the cache is full after installing.

On a cold cache with more than one CPU, a second process compiles the port backends' kernels
(system, tap, vhost-user) while this one compiles the datapath's, then this one loads them from the
cache: the cold start takes about the longer of the two instead of their sum. A marker file next to
the cache (``pyvswitch-warm-<source hash>``) says the cache is warm, so a warm start runs no second
process.

After the warm-up a listener reports any kernel that still compiles (a signature the warm-up did
not foresee) in the log, so the miss is found and added here.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time

import numba
import numpy as np
from numba.core import event

from numba_cache import SOURCES_HASH

log = logging.getLogger(__name__)

_done = False


class _LateCompiles(event.Listener):
    """Logs a kernel compiled after the warm-up: it stalled whichever thread called it."""

    def on_start(self, ev: event.Event) -> None:
        data = ev.data or {}
        dispatcher = data.get("dispatcher")
        name = getattr(getattr(dispatcher, "py_func", None), "__qualname__", dispatcher)
        log.warning("kernel %s compiled after the start-up warm-up, for argument types %s: add it to "
                    "vswitch/warmup.py", name, data.get("args"))

    def on_end(self, ev: event.Event) -> None:
        pass


def _warm_openflow_path(datapath: object, br: object) -> None:
    """Run the datapath (a throw-away ``Datapath``) once through each of its branches with bridge ``br``
    (OpenFlow) and a second, NORMAL-only bridge sharing its bursts: a packet-out, a burst of misses
    (upcalls), the same burst again (the one-call hit path), a burst with a runt in it, with the argument
    types the datapath passes."""
    from backends.patch import PatchPort
    from backends.port import Port
    from ofproto.rules import OFPP_CONTROLLER, OFPP_FLOOD, OFPP_NORMAL, Flow, Instructions, Match, Output, SetField
    from ofproto.tables import FlowTables
    from vswitch.vlan import VlanConfig, fill_vlan_map

    dp = datapath
    tables = FlowTables(2)
    tables.add(Flow(0, 1, Match(eth_type=0x0800), Instructions(apply=(SetField("eth_dst", 2),), goto=1)))
    tables.add(Flow(1, 0, Match(), Instructions(apply=(Output(OFPP_CONTROLLER), Output(OFPP_NORMAL)))))
    ts = tables.compile()
    br.packet_out(bytes(60), -1, (Output(OFPP_FLOOD),), ts)      # type: ignore[attr-defined]
    br.set_flows(tables, ts, -1, False)                          # type: ignore[attr-defined]
    other = dp.add_bridge("warm-up-normal")                      # type: ignore[attr-defined]

    class _Quiet(Port):
        def rx_burst(self, pool: object, burst: object, start: int, max_n: int) -> int:
            return 0

        def tx_burst(self, pool: object, slots: object, vlans: object, start: int, count: int) -> int:
            return count

        def wakeup_fds(self) -> list[int]:
            return []

        def close(self) -> None:
            pass

    a, b = _Quiet("warm-a"), _Quiet("warm-b")
    br.attach(a)                                                 # type: ignore[attr-defined]
    other.attach(b)
    pa, pb = PatchPort("warm-pa", "warm-pb"), PatchPort("warm-pb", "warm-pa")   # NORMAL floods across them
    other.attach(pa)
    br.attach(pb)                                                # type: ignore[attr-defined]
    for bridge, port in ((other, b), (other, pa)):
        fill_vlan_map(bridge.vlan_map, port.port_no, VlanConfig(), True)
    ip = bytes(12) + b"\x08\x00" + bytes([0x45]) + bytes(45)
    # two misses of one megaflow in one burst (mf_covered), then the bridges' burst twice (miss, hit), a runt
    for frames, ports in (((ip, ip), (a, a)), ((ip, bytes(60)), (a, b)), ((ip, bytes(60)), (a, b)),
                          ((ip, bytes(8)), (a, b))):
        n = dp.pool.alloc(dp.burst, 0, len(frames))              # type: ignore[attr-defined]
        for i in range(n):
            dp.pool.put(int(dp.burst[i]), frames[i], ports[i].port_no)  # type: ignore[attr-defined]
        dp._n_extra = 0                                          # type: ignore[attr-defined]
        dp._process(dp.burst, n, 0)                              # type: ignore[attr-defined]
        dp._patch_rounds(0)                                      # type: ignore[attr-defined]
        if dp._n_extra:                                          # type: ignore[attr-defined]
            dp.pool.free(dp.extra, dp._n_extra)                  # type: ignore[attr-defined]
        dp.pool.free(dp.burst, n)                                # type: ignore[attr-defined]
    br.packet_ins.clear()                                        # type: ignore[attr-defined]
    _warm_tunnel_path(dp, a, b)
    dp.upcalls.expire(dp.tables(), 1 << 20)                      # type: ignore[attr-defined]


def _warm_tunnel_path(datapath: object, a: object, b: object) -> None:
    """Tunnels' kernels with the datapath's argument types: a Geneve frame terminated (and one that is not), the
    decapsulated round (keys with tunnel words), NORMAL's frames encapsulated for a tunnel port."""
    from dpif.tunnel import TNL_GENEVE, TS_READY, TunnelHeader, TunnelPorts, header_bytes
    from dpif.tunnel_pop import TerminationTable
    from vswitch.dptunnels import tlv_rows

    dp = datapath
    h = TunnelHeader(kind=TNL_GENEVE, eth_dst=0x02, eth_src=0x04, ipv6=False, ip_src=0x0A000002, ip_dst=0x0A000001,
                     key=5)
    inner = bytes(12) + b"\x08\x00" + bytes([0x45]) + bytes(45)
    outer = bytearray(header_bytes(h) + inner)
    outer[16:18] = (len(outer) - 14).to_bytes(2, "big")          # IPv4 total length
    outer[38:40] = (len(outer) - 34).to_bytes(2, "big")          # UDP length
    words = sum(int.from_bytes(outer[i:i + 2], "big") for i in range(14, 34, 2))
    while words >> 16:
        words = (words & 0xFFFF) + (words >> 16)
    outer[24:26] = (~words & 0xFFFF).to_bytes(2, "big")          # IPv4 header checksum
    table = TerminationTable()
    table.add_endpoint(0x0A000001, 0x02)
    table.add_port(TNL_GENEVE, 6081, None, 0x0A000002, 5, False, a.port_no)   # type: ignore[attr-defined]
    endpoints, tports = table.arrays()
    port_term = np.ones(len(dp.ports), dtype=np.uint8)           # type: ignore[attr-defined]
    dp.term = (port_term, endpoints, tports, tlv_rows())         # type: ignore[attr-defined]
    tp = TunnelPorts(len(dp.ports))                              # type: ignore[attr-defined]
    tp.set_port(a.port_no, h, b.port_no, TS_READY)               # type: ignore[attr-defined]
    dp.tunnel_ports, dp.tnl_port_list = tp, np.array([a.port_no], dtype=np.int64)   # type: ignore[attr-defined]
    try:
        dp._patch_rounds(0)     # tunnel_handover (``_send`` runs the rounds only when a frame is queued for them)

        n = dp.pool.alloc(dp.burst, 0, 2)                        # type: ignore[attr-defined]
        dp.pool.put(int(dp.burst[0]), bytes(outer), b.port_no)   # type: ignore[attr-defined]
        dp.pool.put(int(dp.burst[1]), inner, b.port_no)          # type: ignore[attr-defined]
        dp._n_extra = 0                                          # type: ignore[attr-defined]
        kept, n = dp._terminate(dp.burst, n)                     # type: ignore[attr-defined]
        dp._process(kept, n, 0)                                  # type: ignore[attr-defined]
        dp._send(0)                                              # type: ignore[attr-defined]
        dp.pool.free(kept, n)                                    # type: ignore[attr-defined]
        tn, dp.tn = dp.tn, 0                                     # type: ignore[attr-defined]
        dp._n_extra = 0                                          # type: ignore[attr-defined]
        assert tn == 1, "the warm-up's Geneve frame was not terminated"
        dp._process(dp.tburst, tn, 0, tunneled=True)             # type: ignore[attr-defined]
        dp._send(0)                                              # type: ignore[attr-defined]
        dp.pool.free(dp.tburst, tn)                              # type: ignore[attr-defined]
    finally:
        dp.term = None                                           # type: ignore[attr-defined]
        dp._tunnel_rebuild()                                     # type: ignore[attr-defined]


def _warm_marker() -> str:
    """The file that says numba's cache holds every kernel of these sources."""
    import dpif

    where = numba.config.CACHE_DIR or os.path.join(os.path.dirname(os.path.abspath(dpif.__file__)), "__pycache__")
    return os.path.join(where, f"pyvswitch-warm-{SOURCES_HASH[:16]}")


def _warm_backends() -> None:
    from backends import system, tap, vhost_user

    system.warm_up()
    tap.warm_up()
    vhost_user.warm_up()


def _backends_in_parallel() -> subprocess.Popen | None:
    """On a cold cache with a spare CPU: a process compiling the backends' kernels (None otherwise)."""
    if os.path.exists(_warm_marker()) or len(os.sched_getaffinity(0)) < 2:
        return None
    try:
        return subprocess.Popen([sys.executable, "-m", "vswitch.warmup", "--backends"], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    except OSError as e:
        log.warning("warm-up: no second process for the backends' kernels (%s); compiling them here", e)
        return None


def _warm_main_kernels() -> None:
    """The datapath's, the L2 table's and the OpenFlow path's kernels (this process)."""
    from classifier.l2table import l2_add_static, l2_flush, l2_remove, make_l2table
    from vswitch.datapath import Datapath
    from vswitch.openflow import flows

    dp = Datapath("warm-up", n_slots=64)     # its constructor runs the L2 switch and aging kernels
    try:
        l2, info = make_l2table(64, 300)
        mac = np.uint64(0x020000000001)
        l2_add_static(l2, info, 0, mac, 1)
        l2_remove(l2, info, 0, mac)
        l2_flush(l2, info, -1, False)
        br = dp.add_bridge("warm-up")
        br.set_mac_table(128, 300)            # l2_copy
        _warm_openflow_path(dp, br)
    finally:
        dp.close()
    flows.warm_up()


def warm_up_kernels() -> float:
    """Load or compile every kernel with the argument types the switch passes them; returns the seconds taken."""
    global _done
    t0 = time.monotonic()
    if _done:
        return 0.0
    helper = _backends_in_parallel()
    try:
        _warm_main_kernels()
        err = helper.communicate()[1] if helper is not None else b""
    except BaseException:      # stopped while starting (a signal): the second process goes too
        if helper is not None:
            helper.kill()
            helper.wait()
        raise
    if helper is not None:
        if helper.returncode != 0:   # this process compiles what it could not
            log.warning("warm-up: the backends' process failed (%s): %s", helper.returncode,
                        err.decode(errors="replace").strip()[-500:])
    _warm_backends()
    _done = True
    try:
        with open(_warm_marker(), "w"):
            pass
    except OSError:
        pass      # an unwritable cache: every start is a cold one, still correct
    event.register("numba:compile", _LateCompiles())
    return time.monotonic() - t0


def main() -> int:
    """``python -m vswitch.warmup``: fill numba's cache (``make`` runs it after installing);
    ``--backends``: only the port backends' kernels (the second process of a cold start)."""
    if sys.argv[1:] == ["--backends"]:
        _warm_backends()
        return 0
    took = warm_up_kernels()
    print(f"pyvswitch: kernels loaded or compiled in {took:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
