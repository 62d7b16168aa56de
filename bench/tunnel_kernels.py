"""``python -m bench tunnel-kernels``: the tunnel kernels alone, in Mpps on one core: encapsulation
(``dpif.actions.execute_burst`` running ``tnl_push(...),output``, ``dpif.tunnel``) and decapsulation
(``dpif.tunnel_pop.tnl_terminate``) of 64-byte inner frames.

Method: a pool of 1,024 slots (``--slots``) of 64-byte IPv4/TCP frames with random addresses and ports at head
128 (the pool's headroom). Encap cases: Geneve and VXLAN over IPv4 (UDP checksum 0, OVS's default), Geneve with
``csum=true``, Geneve over IPv6 (UDP checksummed, as OVS always does over IPv6), GRE with a key; each burst of
256 (``--burst``) is pushed and queued for one port; once every slot has been pushed the pool's metadata (head,
length) are set back with one numpy copy (timed too). Decap cases: the same frames encapsulated once (Geneve
over IPv4 without and with a UDP checksum, VXLAN, GRE), each burst terminated against a table of 4 tunnel ports,
the metadata set back likewise. Before timing, every pushed frame is checked against the plain-Python model
(``dpif.actions_ref.tnl_push``) and every decapsulated frame against the original. Windows as in ``bench
flowtable`` (round-robin, ~0.01 s each); ``mpps`` is the best window, ``mpps_median`` the median. The process is
pinned to one core. Goal (issue 19): 20 Mpps each. Results: ``bench/results/tunnel-kernels.{json,png,md}``.
"""

from __future__ import annotations

import argparse
import ipaddress
import os

import numpy as np

from backends.pool import META_HEAD, META_IN_PORT, META_LEN, PacketPool
from bench.common import PlotSpec, Progress, add_output_args, log, machine_info, write_results
from bench.flowtable import WINDOW, Runner, measure
from dpif import actions as A
from dpif import actions_ref as R
from dpif import tunnel as T
from dpif import tunnel_pop as P
from dpif.meters import NO_METERS

LOCAL, PEER = int(ipaddress.IPv4Address("192.168.50.1")), int(ipaddress.IPv4Address("192.168.50.2"))
LOCAL6, PEER6 = int(ipaddress.IPv6Address("fd00:50::1")), int(ipaddress.IPv6Address("fd00:50::2"))
MAC_LOCAL, MAC_PEER = 0x020000000001, 0x020000000002


def make_frame(rng: np.random.Generator) -> bytes:
    """A 64-byte IPv4/TCP frame with random addresses and ports (checksums not needed by the kernels)."""
    macs = rng.integers(0, 256, 12, dtype=np.uint8).tobytes()
    ip = b"\x45\x00\x00\x32\0\0\x40\x00\x40\x06\0\0" + rng.integers(0, 256, 8, dtype=np.uint8).tobytes()
    tcp = rng.integers(0, 256, 4, dtype=np.uint8).tobytes() + bytes(8) + b"\x50\x10\xff\xff" + bytes(4)
    f = macs + b"\x08\x00" + ip + tcp
    return f + bytes(64 - len(f))


HEADERS = {
    "geneve": T.TunnelHeader(T.TNL_GENEVE, MAC_LOCAL, MAC_PEER, False, PEER, LOCAL, key=0x1C7),
    "geneve csum": T.TunnelHeader(T.TNL_GENEVE, MAC_LOCAL, MAC_PEER, False, PEER, LOCAL, key=0x1C7, csum=True),
    "vxlan": T.TunnelHeader(T.TNL_VXLAN, MAC_LOCAL, MAC_PEER, False, PEER, LOCAL, key=5),
    "geneve ipv6": T.TunnelHeader(T.TNL_GENEVE, MAC_LOCAL, MAC_PEER, True, PEER6, LOCAL6, key=0x1C7),
    "gre key": T.TunnelHeader(T.TNL_GRE, MAC_LOCAL, MAC_PEER, False, PEER, LOCAL, key=7),
}
DECAP = ("geneve", "geneve csum", "vxlan", "gre key")


def _pool(frames: list[bytes]) -> PacketPool:
    pool = PacketPool(len(frames), 2048, 128)
    for s, f in enumerate(frames):
        pool.put(s, f, 0)
    return pool


def encap_runner(frames: list[bytes], h: T.TunnelHeader, burst: int) -> Runner:
    """Bursts through ``execute_burst`` with ``tnl_push(h),output(1)``; checked against the model first."""
    pool = _pool(frames)
    n_slots = len(frames)
    meta0 = pool.meta.copy()
    prog = A.encode([T.tnl_push(h, 2, 1), A.output(1)])
    index = np.zeros((burst, 2), dtype=np.int64)
    index[:, 1] = len(prog)
    out = np.zeros((2, 2 * burst), dtype=np.int32)
    out_start = np.zeros((2, 3), dtype=np.int32)
    drops = np.zeros((3, A.N_DROP_REASONS), dtype=np.int64)
    free_stack, free_top = np.zeros(1, dtype=np.int32), np.zeros(1, dtype=np.int64)
    extra = np.zeros(1, dtype=np.int32)
    side, side_n = np.zeros((A.SIDE_ROWS, burst), dtype=np.int32), np.zeros(2, dtype=np.int64)
    chunks = [np.arange(i, i + burst, dtype=np.int32) for i in range(0, n_slots - burst + 1, burst)]
    nb = len(chunks)
    data, meta = pool.data, pool.meta

    pos = [0]

    def run(calls: int) -> None:
        for _ in range(calls):
            A.execute_burst(data, meta, chunks[pos[0]], burst, index, prog, out, out_start, drops, free_stack,
                            free_top, extra, side, side_n, NO_METERS, 0)
            pos[0] += 1
            if pos[0] == nb:            # every slot pushed once: set the pool's metadata back
                meta[:] = meta0
                pos[0] = 0

    for c in range(nb):
        ch = chunks[c]
        A.execute_burst(data, meta, ch, burst, index, prog, out, out_start, drops, free_stack, free_top, extra,
                        side, side_n, NO_METERS, 0)
        for s in ch[:16]:
            want = R.tnl_push(frames[s], 128, A.decode(prog)[0][1], data.shape[1])
            assert not isinstance(want, int) and pool.frame(int(s)) == bytes(want[1]), "push differs from the model"
        meta[ch[0] : ch[0] + burst] = meta0[ch[0] : ch[0] + burst]
    assert drops.sum() == 0, drops
    return run


def decap_runner(frames: list[bytes], h: T.TunnelHeader, burst: int) -> Runner:
    """Bursts through ``tnl_terminate`` of the frames encapsulated with ``h``; checked against the originals."""
    pool = _pool(frames)
    n_slots = len(frames)
    prog = A.decode(A.encode([T.tnl_push(h, 2, 1)]))[0][1]
    for s, f in enumerate(frames):
        r = R.tnl_push(f, 128, prog, pool.data.shape[1])
        assert not isinstance(r, int)
        pool.put(s, bytes(r[1]), 0)
    meta0 = pool.meta.copy()
    t = P.TerminationTable()
    t.add_endpoint(LOCAL, MAC_LOCAL)
    t.add_port(T.TNL_VXLAN, 4789, None, PEER, 5, False, 3)
    t.add_port(T.TNL_GRE, 0, None, PEER, 7, False, 4)
    t.add_port(T.TNL_GENEVE, 6081, None, 0x0A000009, 0x1C7, False, 5)
    t.add_port(T.TNL_GENEVE, 6081, None, PEER, 0x1C7, False, 6)
    endpoints, tports = t.arrays()
    tlv = P.tlv_table([])
    port_term = np.ones(8, dtype=np.uint8)
    keep, tunneled, dropped = (np.zeros(burst, dtype=np.int32) for _ in range(3))
    drops = np.zeros((9, A.N_DROP_REASONS), dtype=np.int64)
    snoop, snoop_n = np.zeros((16, P.SN_WORDS), dtype=np.uint64), np.zeros(2, dtype=np.int64)
    chunks = [np.arange(i, i + burst, dtype=np.int32) for i in range(0, n_slots - burst + 1, burst)]
    nb = len(chunks)
    data, meta, tun = pool.data, pool.meta, pool.tun

    pos = [0]

    def run(calls: int) -> None:
        for _ in range(calls):
            P.tnl_terminate(data, meta, tun, chunks[pos[0]], burst, port_term, endpoints, tports, tlv, keep, tunneled,
                            dropped, drops, snoop, snoop_n)
            pos[0] += 1
            if pos[0] == nb:            # every slot terminated once: set the pool's metadata back
                meta[:] = meta0
                pos[0] = 0

    for c in range(nb):
        ch = chunks[c]
        _, nt, _ = P.tnl_terminate(data, meta, tun, ch, burst, port_term, endpoints, tports, tlv, keep, tunneled,
                                   dropped, drops, snoop, snoop_n)
        assert nt == burst, drops
        assert all(pool.frame(int(s)) == frames[s] and meta[s, META_IN_PORT] > 0 for s in ch)
        meta[ch[0] : ch[0] + burst] = meta0[ch[0] : ch[0] + burst]
    assert meta[0, META_HEAD] == 128 and meta[0, META_LEN] > 64
    return run


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (``python -m bench tunnel-kernels --help``)."""
    ap = argparse.ArgumentParser(prog="python -m bench tunnel-kernels", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--burst", type=int, default=256, help="frames per kernel call (default 256)")
    ap.add_argument("--slots", type=int, default=1024, help="pool slots cycled through (default 1024)")
    ap.add_argument("--seconds", type=float, default=2.0, help="measuring time per case, spread over the run")
    add_output_args(ap)
    args = ap.parse_args(argv)
    if args.slots < args.burst:
        ap.error("--slots must be at least --burst")
    cpu = max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    rng = np.random.default_rng(42)
    frames = [make_frame(rng) for _ in range(args.slots)]
    runs = {f"encap {name}": encap_runner(frames, h, args.burst) for name, h in HEADERS.items()}
    runs |= {f"decap {name}": decap_runner(frames, HEADERS[name], args.burst) for name in DECAP}
    with Progress(max(5, int(args.seconds / WINDOW)), f"tunnel kernels: burst {args.burst}") as bar:
        rates = measure(runs, args.burst, args.seconds, bar)
    rows = []
    for name, (best, median) in rates.items():
        rows.append({"case": name, "direction": name.split()[0], "mpps": round(best / 1e6, 2),
                     "mpps_median": round(median / 1e6, 2)})
        log(f"{name:18s} {best / 1e6:7.2f} Mpps (median {median / 1e6:.2f})")
    method = ("64-byte inner IPv4/TCP frames at head 128, bursts of "
              f"{args.burst} over {args.slots} slots, one kernel call per burst from Python (call overhead and the "
              "numpy copy that sets the pool's slot metadata back after each pass over it included); "
              "encap = execute_burst running tnl_push(...),output(1); decap = tnl_terminate against 4 tunnel "
              "ports. Best / median of "
              f"{WINDOW} s windows taken round-robin over {args.seconds} s per case, pinned to CPU {cpu}. "
              "Goal: 20 Mpps each.")
    write_results("tunnel-kernels", {"method": method, "machine": machine_info(pinned_cpu=cpu), "burst": args.burst,
                                     "results": rows, "goal_mpps": 20},
                  PlotSpec(group="case", series="", metrics=[("mpps", "Mpps (best window)"),
                                                             ("mpps_median", "Mpps (median window)")],
                           title="tunnel kernels, 64-byte inner frames, one core"),
                  print_json=args.json, out_dir=args.out_dir)
    return 0
