"""``python -m bench <name> [args]``: run one benchmark (``bench.<name>.main(argv)``)."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

# benchmarks known in advance, with a one-line description (modules are imported only when run)
KNOWN = {
    "classify": "numba L2 classifier vs the Python reference: frames/s per burst and table size",
    "extract": "datapath key extraction (dpif, numba) vs classifier.parse_burst on mixed TCP/UDP/ARP frames",
    "fixture_normal": "L2 NORMAL on br0 with br-int empty vs OVN's flows loaded: pyvswitch vs OVS netdev",
    "flowtable": "megaflow datapath hit path and upcall rate vs flow_burst and L2, 10 to 100,000 flows",
    "meters": "datapath meters (dpif/meters.py) in the executor: ns per frame passing, over the rate, two bands",
    "megaflow": "megaflow cache hit path (dpif, numba): 100,000 megaflows over 1/8/32 masks, EMC on/off",
    "forward": "64-byte frames port to port: pyvswitch vs OVS netdev vs the Linux bridge",
    "pipeline": "30-table goto pipeline: megaflow hit path vs flow_burst, and translations per second",
    "openflow": "ovs-ofctl add-flows install rate and forwarding with 10..100,000 flows: pyvswitch vs OVS netdev",
    "port_tx": "port backend packet rates (system, tap) on devices it creates",
    "soak_vhost": "vhost-user fuzz soak against the daemon: hostile sessions and 1M fuzzed descriptor chains",
    "tunnel_kernels": "tunnel encap (TNL_PUSH in the executor) and decap (tnl_terminate) alone: Mpps, 64-byte frames",
    "trafgen": "traffic generator and sink (gen / sink / veth self-test)",
    "tunnel": "64-byte frames host to host over a Geneve (or VXLAN) tunnel: pyvswitch pair vs OVS netdev pair",
    "vsctl": "ovs-vsctl add-port / del-port round trip, pyvswitch vs OVS",
    "vhost": "64-byte frames looped through two vhost-user ports by testpmd: pyvswitch vs OVS-DPDK",
    "virtq": "virtqueue kernels (dequeue / enqueue) in ns per frame, in cache, vs plain Python",
}
NOT_BENCHMARKS = {"common", "__main__", "__init__", "dpprofile"}


def available() -> dict[str, str]:
    """Benchmark name -> description, for the modules present in the package."""
    here = Path(__file__).resolve().parent
    present = {m.name for m in pkgutil.iter_modules([str(here)])} - NOT_BENCHMARKS
    return {name: KNOWN.get(name, "") for name in sorted(present | set(KNOWN)) if name in present}


def usage() -> str:
    """The --help text."""
    lines = ["usage: python -m bench <benchmark> [args]",
             "       python -m bench <benchmark> --help   (that benchmark's options)", "", "benchmarks:"]
    avail = available()
    for name in sorted(set(avail) | set(KNOWN)):
        desc = KNOWN.get(name, "")
        state = "" if name in avail else "  (not written yet)"
        lines.append(f"  {name:10s} {desc}{state}")
    lines += ["", "Results go to bench/results/<name>.{json,png,md}; --json also prints the JSON on stdout."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch to ``bench.<name>.main``."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if argv else 2
    name = argv[0].replace("-", "_")
    if name not in available():
        print(f"unknown benchmark {argv[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"bench.{name}")
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
