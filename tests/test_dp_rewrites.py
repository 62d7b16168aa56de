"""The headers OVN's flows rewrite (IPv6 addresses, ICMP / ICMPv6 type and code, ND target and link-layer
options, ARP opcode and addresses), from the executor up to a real ping answered by the switch.

* the executor: a frame whose checksums were valid keeps them valid (checked from scratch, independently of
  the model) whatever it rewrites; OVN's responders turn requests into replies byte for byte;
* the translator: OVN's table-11 / table-27 flows (push / pop swaps, move, set_field) run through the real
  datapath agree with the reference model (``xlate.reference``) on every byte;
* the daemon: flows from the real ``ovs-ofctl`` answer a namespace's ARP request, ICMP echo request and ICMPv6
  echo request themselves (the kernel there checks every checksum); without the responder flow, no answer.
"""

from __future__ import annotations

import struct
import subprocess
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from dpif import actions as A
from dpif import actions_ref as R
from ofproto.rules import OFPP_IN_PORT, Flow, Instructions, Match, Move, Output, SetField, StackPop, StackPush
from tests import test_dp_actions as T
from tests.test_openflow import ofctl
from tests.test_xlate_nicira import run_both

MAC_A, MAC_R = 0x020000000001, 0x0200000000FE
IP_A, IP_R = 0x0A000001, 0x0A0000FE
IP6_A, IP6_R = 0xFD00 << 112 | 1, 0xFD00 << 112 | 0xFE


# ---------------------------------------------------------------- checksums, from scratch

def _ok(b: bytes) -> bool:
    """A ones'-complement sum (checksum included) that verifies."""
    return R.csum(b) == 0


def checksums_valid(f: bytes) -> bool:
    """Every checksum the frame carries verifies (IPv4 header, TCP/UDP/ICMP/ICMPv6 over the whole packet)."""
    l3 = R.l3_offset(f)
    if l3 >= 0:
        ihl, tot, proto = (f[l3] & 15) * 4, int.from_bytes(f[l3 + 2 : l3 + 4], "big"), f[l3 + 9]
        seg = f[l3 + ihl : l3 + tot]
        if not _ok(f[l3 : l3 + ihl]):
            return False
        if proto == 1:
            return _ok(seg)
        if proto == A.PROTO_UDP and seg[6:8] == b"\0\0":
            return True
        return _ok(f[l3 + 12 : l3 + 20] + bytes([0, proto]) + len(seg).to_bytes(2, "big") + seg)
    l3 = R.l3v6_offset(f)
    if l3 < 0:
        return True
    l4, nh, _, _ = R.v6_upper(f, l3)
    seg = f[l4 : l3 + 40 + int.from_bytes(f[l3 + 4 : l3 + 6], "big")]
    if nh == A.PROTO_UDP and seg[6:8] == b"\0\0":
        return True
    return _ok(f[l3 + 8 : l3 + 40] + len(seg).to_bytes(4, "big") + bytes([0, 0, 0, nh]) + seg)


@st.composite
def whole_packets(draw: st.DrawFn) -> bytes:
    """IPv4 / IPv6 packets with valid checksums, whole in the frame: not fragments, no routing header with
    segments left (its pseudo-header holds another destination)."""
    macs = draw(st.binary(min_size=12, max_size=12))
    f = draw(T.ipv4(macs) if draw(st.booleans()) else T.ipv6(macs))
    l3 = R.l3_offset(f)
    if l3 >= 0:
        assume(int.from_bytes(f[l3 + 6 : l3 + 8], "big") & 0x3FFF == 0)
    else:
        l3 = R.l3v6_offset(f)
        l4, _, routed, frag = R.v6_upper(f, l3)
        assume(l4 >= 0 and not routed and not frag)
    assert checksums_valid(f)
    return f


def _rewrites() -> st.SearchStrategy[list[int]]:
    return st.sampled_from(sorted(A.SET_FIELDS)).flatmap(
        lambda n: st.builds(A.set_field, st.just(n), st.integers(0, (1 << A.SET_FIELDS[n][2]) - 1),
                            st.one_of(st.none(), st.integers(0, (1 << A.SET_FIELDS[n][2]) - 1))))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(whole_packets(), st.lists(_rewrites(), min_size=1, max_size=6))
def test_valid_checksums_stay_valid(frame: bytes, edits: list[list[int]]) -> None:
    prog = A.encode([*edits, A.output(1)]).tolist()
    q, _, _ = T.run_kernel([(64, frame, prog)], 0)
    out = q[1][0][1]
    assert checksums_valid(out), A.format_actions(prog)


# ---------------------------------------------------------------- OVN's responders, byte for byte

def icmp4(src: int, dst: int, icmp_type: int, ttl: int = 64) -> bytes:
    msg = bytearray(struct.pack("!BBHHH", icmp_type, 0, 0, 0x1234, 7) + b"payload!")
    msg[2:4] = R.csum(bytes(msg)).to_bytes(2, "big")
    ip = bytearray(struct.pack("!BBHHHBBHII", 0x45, 0, 20 + len(msg), 1, 0x4000, ttl, 1, 0, src, dst))
    ip[10:12] = R.csum(bytes(ip)).to_bytes(2, "big")
    return MAC_R.to_bytes(6, "big") + MAC_A.to_bytes(6, "big") + b"\x08\x00" + bytes(ip + msg)


def icmp6(src: int, dst: int, msg: bytes, hlim: int = 64) -> bytes:
    f = bytearray(MAC_R.to_bytes(6, "big") + MAC_A.to_bytes(6, "big") + b"\x86\xdd"
                  + struct.pack("!IHBB", 0x60000000, len(msg), 58, hlim) + src.to_bytes(16, "big")
                  + dst.to_bytes(16, "big") + msg)
    f[56:58] = R.v6_l4_full(f, 14, 54, 58).to_bytes(2, "big")
    return bytes(f)


def echo6(src: int, dst: int, icmp_type: int, hlim: int = 64) -> bytes:
    return icmp6(src, dst, struct.pack("!BBHHH", icmp_type, 0, 0, 0x42, 1) + b"ping6", hlim)


def nd_msg(icmp_type: int, target: int, opt: int | None, mac: int = MAC_A) -> bytes:
    msg = struct.pack("!BBHI", icmp_type, 0, 0, 0x60000000 if icmp_type == 136 else 0) + target.to_bytes(16, "big")
    return msg + (bytes([opt, 1]) + mac.to_bytes(6, "big") if opt else b"")


def arp(op: int, sha: int, spa: int, tha: int, tpa: int, dst: int = 0xFFFFFFFFFFFF, src: int = MAC_A) -> bytes:
    return (dst.to_bytes(6, "big") + src.to_bytes(6, "big") + b"\x08\x06"
            + struct.pack("!HHBBH", 1, 0x0800, 6, 4, op) + sha.to_bytes(6, "big") + spa.to_bytes(4, "big")
            + tha.to_bytes(6, "big") + tpa.to_bytes(4, "big"))


def run(frame: bytes, actions: list[list[int]]) -> bytes:
    q, drops, _ = T.run_kernel([(64, frame, A.encode([*actions, A.output(1)]).tolist())], 0)
    assert sum(drops) == 0
    return q[1][0][1]


def test_icmp_echo_request_becomes_the_reply() -> None:
    out = run(icmp4(IP_A, IP_R, 8), [A.set_field("nw_src", IP_R), A.set_field("nw_dst", IP_A),
                                     A.set_field("nw_ttl", 255), A.set_field("icmp_type", 0)])
    assert out == icmp4(IP_R, IP_A, 0, ttl=255)


def test_icmpv6_echo_request_becomes_the_reply() -> None:
    out = run(echo6(IP6_A, IP6_R, 128), [A.set_field("ipv6_src", IP6_R), A.set_field("ipv6_dst", IP6_A),
                                         A.set_field("icmp_type", 129)])
    assert out == echo6(IP6_R, IP6_A, 129)
    half = run(echo6(IP6_A, IP6_R, 128), [A.set_field("ipv6_dst", 0xAB, 0xFF)])   # the low word alone
    assert half == echo6(IP6_A, IP6_R & ~0xFF | 0xAB, 128)


def test_nd_target_and_link_layer_options() -> None:
    t1, t2, mac = 0xFE80 << 112 | 0x77, 0xFE80 << 112 | 0x78, 0x0A0B0C0D0E0F
    ns = icmp6(IP6_A, IP6_R, nd_msg(135, t1, 1))
    # an NS: the target and its source link-layer option; its (absent) target option: nothing
    assert run(ns, [A.set_field("nd_target", t2), A.set_field("nd_sll", mac), A.set_field("nd_tll", 1)]) == \
        icmp6(IP6_A, IP6_R, nd_msg(135, t2, 1, mac))
    na = icmp6(IP6_A, IP6_R, nd_msg(136, t1, 2))
    assert run(na, [A.set_field("nd_tll", mac), A.set_field("nd_sll", 5)]) == \
        icmp6(IP6_A, IP6_R, nd_msg(136, t1, 2, mac))
    bare = icmp6(IP6_A, IP6_R, nd_msg(135, t1, None))
    assert run(bare, [A.set_field("nd_sll", mac)]) == bare
    echo = echo6(IP6_A, IP6_R, 128)                        # not ND: the ND words are no-ops
    assert run(echo, [A.set_field("nd_target", t2), A.set_field("nd_sll", mac)]) == echo


def test_arp_request_becomes_the_reply() -> None:
    req = arp(1, MAC_A, IP_A, 0, IP_R)
    out = run(req, [A.set_eth(MAC_A, MAC_R), A.set_field("arp_op", 2), A.set_field("arp_tha", MAC_A),
                    A.set_field("arp_sha", MAC_R), A.set_field("arp_tpa", IP_A), A.set_field("arp_spa", IP_R)])
    assert out == arp(2, MAC_R, IP_R, MAC_A, IP_A, dst=MAC_A, src=MAC_R)
    ip = icmp4(IP_A, IP_R, 8)                               # arp_op's bits on IPv4: nw_proto is not written
    assert run(ip, [A.set_field("arp_op", 2), A.set_field("arp_sha", 1)]) == ip


def test_short_frames_are_left_alone() -> None:
    """A header cut short by the frame's end is not written (nor read past the end)."""
    echo = echo6(IP6_A, IP6_R, 128)[:61]
    cut = [(arp(1, MAC_A, IP_A, 0, IP_R)[:41], [A.set_field("arp_op", 2), A.set_field("arp_tpa", 1)], None),
           (echo, [A.set_field("icmp_type", 1), A.set_field("ipv6_dst", 1)],
            echo[:38] + (1).to_bytes(16, "big") + echo[54:]),    # the address is whole: written, no L4 to fix
           (icmp6(IP6_A, IP6_R, nd_msg(135, 1, 1))[:77], [A.set_field("nd_target", 1), A.set_field("nd_sll", 1)],
            None),
           (icmp4(IP_A, IP_R, 8)[:41], [A.set_field("icmp_type", 0)], None)]
    for f, edits, want in cut:
        assert run(f, edits) == (f if want is None else want)


def test_format_of_the_new_rewrites() -> None:
    prog = A.encode([A.set_field("ipv6_src", IP6_R), A.set_field("nd_target", 5, 0xFF), A.set_field("arp_op", 2),
                     A.set_field("arp_sha", MAC_R), A.set_field("nw_ttl", 255), A.output(1)])
    assert A.format_actions(prog) == ("set(ipv6(src=fd00::fe)),set(nd(target=::5/::ff)),set(arp(op=2)),"
                                      "set(arp(sha=02:00:00:00:00:fe)),set(ipv4(ttl=255)),1")


# ---------------------------------------------------------------- the translator, against the model

def _ovn_flows() -> list[Flow]:
    """OVN's responders (ovn-23.03-flows, tables 11 and 27), answering on the port the request came in."""
    swap4 = (StackPush("ip_src"), StackPush("ip_dst"), StackPop("ip_src"), StackPop("ip_dst"))
    swap6 = (StackPush("ipv6_src"), StackPush("ipv6_dst"), StackPop("ipv6_src"), StackPop("ipv6_dst"))
    back = (Move("eth_src", "eth_dst", 48), SetField("eth_src", MAC_R), Output(OFPP_IN_PORT))
    return [
        Flow(0, 90, Match(eth_type=0x0800, ip_proto=1, ipv4_dst=IP_R, icmpv4_type=8, icmpv4_code=0),
             Instructions(apply=(*swap4, SetField("nw_ttl", 255), SetField("icmp_type", 0), *back))),
        Flow(0, 90, Match(eth_type=0x86DD, ip_proto=58, ipv6_dst=IP6_R, icmpv6_type=128, icmpv6_code=0),
             Instructions(apply=(*swap6, SetField("nw_ttl", 255), SetField("icmpv6_type", 129), *back))),
        Flow(0, 90, Match(eth_type=0x0806, arp_tpa=IP_R, arp_op=1),
             Instructions(apply=(Move("eth_src", "eth_dst", 48), SetField("eth_src", MAC_R), SetField("arp_op", 2),
                                 Move("arp_sha", "arp_tha", 48), SetField("arp_sha", MAC_R),
                                 StackPush("arp_spa"), StackPush("arp_tpa"), StackPop("arp_spa"), StackPop("arp_tpa"),
                                 Output(OFPP_IN_PORT)))),
        Flow(0, 80, Match(eth_type=0x86DD, ip_proto=58, icmpv6_type=135, icmpv6_code=0),
             Instructions(apply=(SetField("icmpv6_type", 136), Move("nd_sll", "reg0", 32), SetField("nd_sll", MAC_R),
                                 SetField("nd_target", IP6_R), Output(1)))),
    ]


def test_ovn_responders_through_the_datapath_agree_with_the_model() -> None:
    frames = [(icmp4(IP_A, IP_R, 8), 2), (echo6(IP6_A, IP6_R, 128), 3), (arp(1, MAC_A, IP_A, 0, IP_R), 2),
              (icmp6(IP6_A, IP6_R, nd_msg(135, 7, 1)), 0), (icmp6(IP6_A, IP6_R, nd_msg(135, 7, None)), 0),
              (icmp4(IP_A, IP_A, 8), 2)]
    got, _ = run_both(_ovn_flows(), frames)
    reply4 = icmp4(IP_R, IP_A, 0, ttl=255)
    assert got.outputs[2][:2] == [reply4[6:12] + reply4[:6] + reply4[12:],
                                  arp(2, MAC_R, IP_R, MAC_A, IP_A, dst=MAC_A, src=MAC_R)]
    reply6 = echo6(IP6_R, IP6_A, 129, hlim=255)
    assert got.outputs[3] == [reply6[6:12] + reply6[:6] + reply6[12:]]
    assert [checksums_valid(f) for f in got.outputs[1]] == [True, True]


#: the new writable fields (registry name, bits the key holds) and fields to copy them from / to
NEW_FIELDS = {"ipv6_src": 128, "ipv6_dst": 128, "nd_target": 128, "arp_op": 8, "arp_spa": 32, "arp_tpa": 32,
              "arp_sha": 48, "arp_tha": 48, "nd_sll": 48, "nd_tll": 48, "icmp_type": 8, "icmp_code": 8,
              "icmpv6_type": 8, "icmpv6_code": 8}
OTHERS = {"xxreg0": 128, "reg1": 32, "eth_src": 48, "nw_ttl": 8}
VALUES = [0, 1, 2, 8, 0x80, 135, 136, 0xFF, MAC_R, IP_R, IP6_R, (1 << 128) - 1]


@st.composite
def rewrite_action(draw: st.DrawFn) -> object:
    name = draw(st.sampled_from(sorted(NEW_FIELDS)))
    width = NEW_FIELDS[name]
    kind = draw(st.sampled_from(["set", "set", "move_in", "move_out", "push_pop"]))
    if kind == "set":
        mask = draw(st.sampled_from([None, None, 0xFF, 1 << (width - 1)]))
        value = draw(st.sampled_from(VALUES)) & ((1 << width) - 1)
        return [SetField(name, value if mask is None else value & mask, mask)]
    other = draw(st.sampled_from(sorted(OTHERS)))
    n = min(width, OTHERS[other], draw(st.sampled_from([8, 16, 32, 48, 128])))
    if kind == "move_in":
        return [Move(other, name, n)]
    if kind == "move_out":
        return [Move(name, other, n), Move(other, name, n, 0, 0)]
    peer = draw(st.sampled_from([f for f, w in NEW_FIELDS.items() if w == width]))
    return [StackPush(name), StackPush(peer), StackPop(name), StackPop(peer)]


@st.composite
def rewrite_frames(draw: st.DrawFn) -> list[tuple[bytes, int]]:
    kinds = [icmp4(IP_A, IP_R, 8), echo6(IP6_A, IP6_R, 128), arp(1, MAC_A, IP_A, 0, IP_R),
             icmp6(IP6_A, IP6_R, nd_msg(135, IP6_R, 1)), icmp6(IP6_A, IP6_R, nd_msg(136, IP6_R, 2)),
             icmp6(IP6_A, IP6_R, nd_msg(135, IP6_R, None)), T._tcp_frame()]
    return [(draw(st.sampled_from(kinds)), draw(st.integers(0, 3))) for _ in range(draw(st.integers(1, 6)))]


@settings(max_examples=80, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(rewrite_action(), min_size=1, max_size=5), rewrite_frames())
def test_random_rewrites_through_the_datapath_agree_with_the_model(acts: list[list], frames: list) -> None:
    """set_field / move / push / pop of every new field, on every kind of frame (their prerequisites checked
    as the frame's headers change), translated, from the megaflow and from the EMC: the bytes agree."""
    flows = [Flow(0, 1, Match(), Instructions(apply=(*[a for group in acts for a in group], Output(1))))]
    run_both(flows, frames)


# ---------------------------------------------------------------- the daemon: a real ping answered by flows

RMAC = "02:00:00:00:72:fe"
RESPONDERS = {
    "arp": ("priority=100,arp,arp_tpa=10.72.0.254,arp_op=1 actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],"
            f"set_field:{RMAC}->eth_src,set_field:2->arp_op,move:NXM_NX_ARP_SHA[]->NXM_NX_ARP_THA[],"
            f"set_field:{RMAC}->arp_sha,push:NXM_OF_ARP_SPA[],push:NXM_OF_ARP_TPA[],pop:NXM_OF_ARP_SPA[],"
            "pop:NXM_OF_ARP_TPA[],in_port"),
    "icmp": ("priority=90,icmp,nw_dst=10.72.0.254,icmp_type=8,icmp_code=0 actions=push:NXM_OF_IP_SRC[],"
             "push:NXM_OF_IP_DST[],pop:NXM_OF_IP_SRC[],pop:NXM_OF_IP_DST[],set_field:255->nw_ttl,"
             f"set_field:0->icmp_type,move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],set_field:{RMAC}->eth_src,in_port"),
    "icmp6": ("priority=90,icmp6,ipv6_dst=fd00:72::fe,icmp_type=128,icmp_code=0 actions=push:NXM_NX_IPV6_SRC[],"
              "push:NXM_NX_IPV6_DST[],pop:NXM_NX_IPV6_SRC[],pop:NXM_NX_IPV6_DST[],set_field:255->nw_ttl,"
              f"set_field:129->icmpv6_type,move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],set_field:{RMAC}->eth_src,"
              "in_port"),
}


@pytest.fixture
def host(switch, net) -> Iterator[tuple]:  # noqa: ANN001 - fixtures
    """Bridge ``rwb`` with one host (10.72.0.1, fd00:72::1) on ofport 1, and the responder flows."""
    from tests.netutil import unique

    stem = unique("rw")
    ns, port = f"{stem}-n", f"{stem}a"
    net.add_host(ns, port, "10.72.0.1/24", mac="02:00:00:00:72:01")
    net.exec(ns, ["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=0"])
    net.exec(ns, ["sysctl", "-qw", "net.ipv6.conf.eth0.disable_ipv6=0"])
    net.exec(ns, ["ip", "-6", "addr", "add", "fd00:72::1/64", "dev", "eth0", "nodad"])
    net.exec(ns, ["ip", "-6", "neigh", "replace", "fd00:72::fe", "lladdr", RMAC, "dev", "eth0"])
    switch.vsctl("add-br", "rwb", "--", "add-port", "rwb", port, "--", "set", "Interface", port, "ofport_request=1")
    switch.wait_for("port attached", lambda: switch.get("Interface", port, "ofport") == "1")
    ofctl(switch, "del-flows", "rwb")
    for flow in RESPONDERS.values():
        ofctl(switch, "add-flow", "rwb", flow)
    yield switch, net, ns


def _neighbour(net, ns: str) -> str:  # noqa: ANN001
    return net.exec(ns, ["ip", "neigh", "show", "10.72.0.254"]).stdout


def _revalidated(sw, eth_type: str) -> None:  # noqa: ANN001
    """Wait until no megaflow of ``eth_type`` answers any more (the datapath takes a new flow set between
    bursts, after ovs-ofctl's reply, as OVS's revalidators do)."""
    def gone() -> bool:
        lines = sw.appctl("dpctl/dump-flows").stdout.splitlines()
        return not [ln for ln in lines if f"eth_type({eth_type})" in ln and "actions:drop" not in ln]
    sw.wait_for(f"{eth_type} megaflows revalidated", gone, timeout=5)


def _forget(net, ns: str) -> None:  # noqa: ANN001
    subprocess.run(["ip", "netns", "exec", ns, "ip", "neigh", "del", "10.72.0.254", "dev", "eth0"],
                   capture_output=True, timeout=10)


@pytest.mark.integration
def test_ping_and_arp_answered_by_the_switch(host) -> None:  # noqa: ANN001
    sw, net, ns = host
    assert net.ping(ns, "10.72.0.254", count=3, deadline=5)            # ARP, then ICMP: both answered by flows
    assert RMAC in _neighbour(net, ns)
    assert net.exec(ns, ["ping", "-6", "-c", "2", "-i", "0.2", "-W", "1", "-w", "5", "fd00:72::fe"],
                    check=False).returncode == 0
    # without the echo responder the address resolves but nothing answers the ping
    ofctl(sw, "--strict", "del-flows", "rwb", "priority=90,icmp,nw_dst=10.72.0.254,icmp_type=8,icmp_code=0")
    _revalidated(sw, "0x0800")
    _forget(net, ns)
    assert not net.ping(ns, "10.72.0.254", count=2, deadline=3)
    assert RMAC in _neighbour(net, ns)
    # without the ARP responder nothing answers the ARP request: no neighbour, no ping
    ofctl(sw, "add-flow", "rwb", RESPONDERS["icmp"])
    ofctl(sw, "-F", "nxm", "--strict", "del-flows", "rwb", "priority=100,arp,arp_tpa=10.72.0.254,arp_op=1")
    _revalidated(sw, "0x0806")
    _forget(net, ns)
    assert not net.ping(ns, "10.72.0.254", count=2, deadline=3)
    assert RMAC not in _neighbour(net, ns)
    # and without the ICMPv6 responder no ping6 reply
    ofctl(sw, "--strict", "del-flows", "rwb", "priority=90,icmp6,ipv6_dst=fd00:72::fe,icmp_type=128,icmp_code=0")
    _revalidated(sw, "0x86dd")
    assert net.exec(ns, ["ping", "-6", "-c", "2", "-i", "0.2", "-W", "1", "-w", "3", "fd00:72::fe"],
                    check=False).returncode != 0
    dump = [ln for ln in ofctl(sw, "dump-flows", "rwb").splitlines()[1:] if ln.strip()]
    assert len(dump) == 1 and "priority=90,icmp,nw_dst=10.72.0.254" in dump[0], dump
