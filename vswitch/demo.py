"""``pyvswitch demo``: three hosts ping each other through a pyvswitch bridge, then everything is removed.

```
 netns pvdemo-a            netns pvdemo-b            netns pvdemo-c
 eth0 10.77.0.1            eth0 10.77.0.2            pvdemo-tap 10.77.0.3
   │ veth                    │ veth                    │ (tap netdev moved into the netns)
 pvdemo-a0 ──system──┐   pvdemo-b0 ──system──┐       │
                     └──────── bridge pvdemo ─────────┘ tap
```
"""

from __future__ import annotations

import signal
import sys

from vswitch.bridge import Bridge
from vswitch.hostnet import HostNet, HostNetError

HOSTS = [("pvdemo-a", "pvdemo-a0", "10.77.0.1"), ("pvdemo-b", "pvdemo-b0", "10.77.0.2")]
TAP_NS, TAP_DEV, TAP_IP = "pvdemo-c", "pvdemo-tap", "10.77.0.3"


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_demo(verbose: bool = False) -> int:
    """Build the topology, ping, print counters and the MAC table, tear down; 0 when all pings passed."""
    signal.signal(signal.SIGTERM, _interrupt)
    net = HostNet()
    bridge: Bridge | None = None
    try:
        print("pyvswitch demo: creating namespaces pvdemo-a, pvdemo-b, pvdemo-c")
        for ns, dev, ip in HOSTS:
            net.add_host(ns, dev, f"{ip}/24")
        net.add_netns(TAP_NS)
        bridge = Bridge("pvdemo")
        for _, dev, _ in HOSTS:
            bridge.add_port(dev, "system")
        bridge.add_port(TAP_DEV, "tap")
        net.move_to_netns(TAP_DEV, TAP_NS, f"{TAP_IP}/24")
        print("pyvswitch demo: bridge pvdemo with system ports pvdemo-a0, pvdemo-b0 and tap port pvdemo-tap")
        ok = True
        for src_ns, dst_ip in (("pvdemo-a", "10.77.0.2"), ("pvdemo-b", "10.77.0.1"),
                               ("pvdemo-a", TAP_IP), (TAP_NS, "10.77.0.2")):
            passed = net.ping(src_ns, dst_ip, count=3)
            ok &= passed
            print(f"  ping {src_ns} -> {dst_ip}: {'ok' if passed else 'FAILED'}")
        print("\nport counters:")
        print(bridge.stats_table())
        print("learned MACs (ovs-appctl fdb/show format):")
        print(bridge.fdb_show())
        drops = {k: v for k, v in bridge.drop_stats().items() if v}
        print("drops by reason: " + (", ".join(f"{k}={v}" for k, v in drops.items()) or "none"))
        print("\npyvswitch demo: " + ("all pings passed" if ok else "some pings FAILED"))
        return 0 if ok else 1
    except KeyboardInterrupt:
        print("\npyvswitch demo: interrupted, cleaning up", file=sys.stderr)
        return 130
    except (HostNetError, OSError) as exc:
        print(f"pyvswitch demo: failed: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if bridge is not None:
            bridge.close()
        net.cleanup()
        print("pyvswitch demo: removed everything it created")
