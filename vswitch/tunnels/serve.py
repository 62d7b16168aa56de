"""The tunnels' control plane alone behind a unixctl socket: ``python -m vswitch.tunnels.serve --unixctl PATH
[--port TYPE:DST_PORT:ODP_PORT ...]`` answers ``ovs-appctl -t PATH`` with the route table and neighbour cache of
the namespace it runs in (follows its route notifications). The tests hold it against a real ovs-vswitchd in the
same namespace; the daemon registers the same commands on its own socket (``appctl.register``).
"""

from __future__ import annotations

import argparse
import json
import select
import signal
import sys

import ovs.poller
import ovs.unixctl
import ovs.unixctl.server

from vswitch.tunnels.appctl import register
from vswitch.tunnels.kernel import RouteWatch
from vswitch.tunnels.neigh import NeighCache
from vswitch.tunnels.route import RouteTable
from vswitch.tunnels.tnlports import TunnelPortMap, dpif_port_name


def main(args: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--unixctl", required=True)
    parser.add_argument("--port", action="append", default=[], help="TYPE:DST_PORT:ODP_PORT, a tunnel port")
    opts = parser.parse_args(args)

    reply_error = ovs.unixctl.server.UnixctlConnection.reply_error

    def reply_error_nl(conn: ovs.unixctl.server.UnixctlConnection, body: str) -> None:
        reply_error(conn, body if body.endswith("\n") else body + "\n")   # as ovs-vswitchd ends its errors
    ovs.unixctl.server.UnixctlConnection.reply_error = reply_error_nl

    ports = TunnelPortMap()
    for spec in opts.port:
        tnl_type, dst_port, odp_port = spec.split(":")
        ports.insert(int(odp_port), int(dst_port), dpif_port_name(tnl_type, int(dst_port)), tnl_type)
    route = RouteTable(ipdevs=ports, load=False)
    watch = RouteWatch(route.refresh)        # subscribed before the first dump: no change is missed
    route.refresh()
    neigh = NeighCache()
    register(ovs.unixctl.command_register, route, neigh, ports)

    def egress(conn: ovs.unixctl.server.UnixctlConnection, argv: list[str], _aux: object) -> None:
        conn.reply(json.dumps(route.egress(argv[0])) + "\n")
    ovs.unixctl.command_register("list-commands", "", 0, 0, ovs.unixctl._unixctl_help, None)   # as the daemon
    # not an OVS command: what Interface.status of a tunnel port to ``REMOTE`` would say
    ovs.unixctl.command_register("pyvswitch/tnl-egress", "REMOTE", 1, 1, egress, None)
    err, server = ovs.unixctl.server.UnixctlServer.create(opts.unixctl)
    if err:
        print(f"unixctl: {err}", file=sys.stderr)
        return 1
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    print("ready", flush=True)
    while not stop:
        poller = ovs.poller.Poller()
        server.wait(poller)
        poller.fd_wait(watch.fileno(), select.POLLIN)
        poller.timer_wait(1000)
        poller.block()
        watch.run()
        neigh.run()
        server.run()
    server.close()
    watch.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
