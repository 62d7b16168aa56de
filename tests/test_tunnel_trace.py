"""``ofproto/trace`` of tunnel traffic on pyvswitch, against a real OVS at the other end of the same tunnel: the
encapsulation (native tunnel notes, the underlay bridge's walk, ``tnl_push`` with the header OVS builds for the
opposite direction) and the decapsulation (``tnl_pop`` for a frame to the tunnel endpoint; a frame to another UDP
port goes to br-phy's LOCAL port)."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.tunnel_hosts import tunnel_pair

pytestmark = pytest.mark.integration

VM_FLOW = "in_port=1,dl_src=02:00:00:00:00:01,dl_dst=02:00:00:00:00:02,ip,nw_src=10.9.0.1,nw_dst=10.9.0.2"


def _header(trace: str) -> str:
    """The ``header(...)`` of the trace's tnl_push."""
    m = re.search(r"tnl_push\(tnl_port\(\d+\),(header\(.*?\)\)),out_port", trace)
    assert m, trace
    return m.group(1)


def _mac(t: object, side: str) -> str:
    ns = t.sides[side].sw_ns   # type: ignore[attr-defined]
    return subprocess.run(["ip", "netns", "exec", ns, "cat", "/sys/class/net/br-phy/address"], capture_output=True,
                          text=True, check=True).stdout.strip()


def test_trace_of_encapsulation_and_decapsulation() -> None:
    with tunnel_pair("geneve", "pyvswitch", "ovs", options={"key": "77"}) as t:
        assert t.ping("a", "b", count=2) > 0, t.diagnose()      # both neighbour caches are filled
        ours = t.appctl("a", "ofproto/trace", "br-int", VM_FLOW)
        theirs = t.appctl("b", "ofproto/trace", "br-int", VM_FLOW)
        for text in (ours, theirs):
            assert "-> output to native tunnel" in text and 'bridge("br-phy")' in text, text
        a_mac, b_mac = _mac(t, "a"), _mac(t, "b")
        mirrored = (_header(theirs).replace(a_mac, "A").replace(b_mac, a_mac).replace("A", b_mac)
                    .replace("172.31.0.1", "X").replace("172.31.0.2", "172.31.0.1").replace("X", "172.31.0.2"))
        assert _header(ours) == mirrored
        ip, port = t.sides["a"].underlay_ip, t.sides["a"].underlay_if
        popped = t.appctl("a", "ofproto/trace", "br-phy", f"in_port={port},dl_dst={a_mac},udp,nw_dst={ip},tp_dst=6081")
        assert re.search(r"Datapath actions: tnl_pop\(\d+\)", popped), popped
        other = t.appctl("a", "ofproto/trace", "br-phy", f"in_port={port},dl_dst={a_mac},udp,nw_dst={ip},tp_dst=6082")
        assert "tnl_pop" not in other and "Datapath actions: LOCAL" in other, other
