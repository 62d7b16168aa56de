"""Port backend packet rates on devices this benchmark creates (and always removes).

* ``system_tx``: ``SystemPort.tx_burst`` of 64-byte frames into a veth pair, once per
  transmit mode (``sendmmsg``, ``ring`` = PACKET_TX_RING); ``mpps`` counts frames the peer
  received (its ``rx_packets``), ``accepted_mpps`` what ``tx_burst`` returned;
* ``system_rx``: ``SystemPort.rx_burst`` (TPACKET_V3 ring) while a second system port
  on the other end of the veth transmits as fast as it can from another thread;
* ``tap_tx`` / ``tap_rx``: ``TapPort.tx_burst`` into a tap; ``TapPort.rx_burst`` while a
  system port on the tap's netdev transmits into it.

All devices live in the root namespace with IPv6 off and frames addressed to a MAC no one
owns (EtherType 0x88B5), so the host stack drops them at once.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
import uuid
from typing import Any

import numpy as np

from backends import PacketPool, Port, SystemPort, TapPort
from backends.port import RX_DROPPED
from bench.common import REPO_DIR, Cleanup, add_output_args, machine_info, run, stop_process, write_results

FRAME = bytes.fromhex("020000000002" "020000000001" "88b5") + bytes(46)


def _sys_counter(dev: str, name: str) -> int:
    with open(f"/sys/class/net/{dev}/statistics/{name}") as f:
        return int(f.read())


def _make_pool(burst: int) -> tuple[PacketPool, np.ndarray, np.ndarray]:
    pool = PacketPool(max(4096, 4 * burst), 2048)
    slots = np.arange(burst, dtype=np.int32)
    for s in slots:
        pool.put(int(s), FRAME)
    return pool, slots, np.full(burst, -1, dtype=np.int16)


def _tx_loop(port: Port, burst: int, seconds: float) -> tuple[int, float, float]:
    """Transmit for ``seconds``; return (frames sent, wall seconds, this thread's CPU seconds)."""
    pool, slots, vlans = _make_pool(burst)
    port.tx_burst(pool, slots, vlans, 0, 1)          # compile / load the kernel outside the timing
    sent, t0, c0 = 0, time.perf_counter(), time.thread_time()
    end = t0 + seconds
    while time.perf_counter() < end:
        for _ in range(64):
            sent += port.tx_burst(pool, slots, vlans, 0, burst)
    return sent, time.perf_counter() - t0, time.thread_time() - c0


def _rx_rate(rx: Port, gen_dev: str, burst: int, seconds: float, offered: tuple[str, str]) -> dict[str, float]:
    """Receive rate of ``rx`` while a generator process transmits into ``gen_dev`` (a system port);
    ``offered`` names the device counter that counts the frames handed to ``rx``'s device."""
    pool = PacketPool(8192, 2048)
    b = np.zeros(burst, dtype=np.int32)
    gen = subprocess.Popen([sys.executable, "-m", "bench.port_tx", "--generate", gen_dev,
                            "--seconds", str(seconds + 2.0), "--burst", str(burst)],
                           stdout=subprocess.PIPE, text=True, cwd=str(REPO_DIR))
    try:
        time.sleep(1.5)                              # generator started and warm
        while n := rx.rx_burst(pool, b, 0, burst):    # drain the backlog
            pool.free(b, n)
        rx.stats()
        drops0 = int(rx.counters[RX_DROPPED])
        got, t0, off0 = 0, time.perf_counter(), _sys_counter(*offered)
        end = t0 + seconds
        while time.perf_counter() < end:
            for _ in range(64):
                n = rx.rx_burst(pool, b, 0, burst)
                pool.free(b, n)
                got += n
        dt = time.perf_counter() - t0
        off = _sys_counter(*offered) - off0
        rx.stats()
        drops = int(rx.counters[RX_DROPPED]) - drops0
        out, _ = gen.communicate(timeout=30)
    finally:
        stop_process(gen)
    return {"mpps": got / dt / 1e6, "offered_mpps": off / dt / 1e6, "rx_dropped": drops,
            "generator_mpps": float(out.strip() or "nan")}


def _drain_rate(rx: Port, gen_dev: str, burst: int) -> dict[str, float]:
    """User-side cost of the receive kernel alone: fill ``rx``'s ring, stop the generator, time the drain."""
    pool = PacketPool(8192, 2048)
    b = np.zeros(burst, dtype=np.int32)
    gen = subprocess.Popen([sys.executable, "-m", "bench.port_tx", "--generate", gen_dev, "--seconds", "1.5",
                            "--burst", str(burst)], stdout=subprocess.PIPE, text=True, cwd=str(REPO_DIR))
    try:
        gen.communicate(timeout=30)
    finally:
        stop_process(gen)
    time.sleep(0.01)                                 # the last block retires
    got, t0 = 0, time.perf_counter()
    while n := rx.rx_burst(pool, b, 0, burst):
        pool.free(b, n)
        got += n
    dt = time.perf_counter() - t0
    return {"mpps": got / dt / 1e6, "frames": got, "ns_per_frame": dt / max(got, 1) * 1e9}


def _generate(dev: str, burst: int, seconds: float) -> None:
    port = SystemPort(dev)
    try:
        sent, dt, _ = _tx_loop(port, burst, seconds)
    finally:
        port.close()
    print(sent / dt / 1e6)


def main(argv: list[str] | None = None) -> int:
    """Measure and print the port rates as JSON (also written to bench/results/port_tx.*)."""
    ap = argparse.ArgumentParser(prog="python -m bench port_tx", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=1.0, help="duration of each measurement")
    ap.add_argument("--repeat", type=int, default=5, help="system_tx: runs per mode (interleaved; median)")
    ap.add_argument("--burst", type=int, default=64, help="frames per tx_burst / rx_burst call")
    ap.add_argument("--generate", metavar="DEV", help=argparse.SUPPRESS)
    add_output_args(ap)
    args = ap.parse_args(argv)
    if args.generate:
        _generate(args.generate, args.burst, args.seconds)
        return 0
    tag = uuid.uuid4().hex[:6]
    a, b, tap = f"pvp-{tag}-a", f"pvp-{tag}-b", f"pvp-{tag}-t"
    rows: list[dict[str, Any]] = []
    with Cleanup() as cu:
        run(["ip", "link", "add", a, "type", "veth", "peer", "name", b])
        cu.push(f"veth {a}", lambda: run(["ip", "link", "del", a], check=False, quiet=True))
        for dev in (a, b):
            run(["sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=1"])
            run(["ip", "link", "set", dev, "up"])
        samples: dict[str, list[float]] = {"sendmmsg": [], "ring": []}
        cpu: dict[str, list[float]] = {"sendmmsg": [], "ring": []}
        for rep in range(args.repeat):
            for mode in ("sendmmsg", "ring") if rep % 2 == 0 else ("ring", "sendmmsg"):
                port = SystemPort(a, tx_mode=mode)
                cu.push(f"port {a}", port.close)
                before = _sys_counter(b, "rx_packets")
                sent, dt, cdt = _tx_loop(port, args.burst, args.seconds)
                samples[mode].append((_sys_counter(b, "rx_packets") - before) / dt / 1e6)
                cpu[mode].append(cdt / max(sent, 1) * 1e9)
                port.close()
        for mode, xs in samples.items():
            rows.append({"test": "system_tx", "mode": mode, "mpps": statistics.median(xs),
                         "cpu_ns_per_frame": statistics.median(cpu[mode]),
                         "samples": [round(x, 3) for x in xs]})
        rx = SystemPort(b)
        cu.push(f"port {b}", rx.close)
        live = _rx_rate(rx, a, args.burst, args.seconds, (b, "rx_packets"))
        rows.append({"test": "system_rx", "mode": "tpacket_v3", **live})
        rx.close()
        rx = SystemPort(b, rx_blocks=64)
        cu.push(f"port {b}", rx.close)
        rows.append({"test": "system_rx_drain", "mode": "tpacket_v3", **_drain_rate(rx, a, args.burst)})
        rx.close()

        tport = TapPort(tap)
        cu.push(f"tap {tap}", tport.close)
        before = _sys_counter(tap, "rx_packets")
        sent, dt, cdt = _tx_loop(tport, args.burst, args.seconds)
        got = _sys_counter(tap, "rx_packets") - before
        rows.append({"test": "tap_tx", "mode": "writev", "mpps": got / dt / 1e6,
                     "cpu_ns_per_frame": cdt / max(sent, 1) * 1e9})
        live = _rx_rate(tport, tap, args.burst, args.seconds, (tap, "tx_packets"))
        rows.append({"test": "tap_rx", "mode": "readv", **live})
        tport.close()
    payload = {
        "benchmark": "port_tx",
        "method": __doc__,
        "machine": machine_info(),
        "burst": args.burst,
        "frame_bytes": len(FRAME),
        "results": rows,
    }
    write_results("port_tx", payload, {"group": "test", "series": "mode", "metrics": [("mpps", "Mpps")]},
                  print_json=True, out_dir=args.out_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
