"""The translator's output to a tunnel port (``xlate.tunnel``): ``CLONE(TNL_PUSH, <the underlay bridge's walk>)``
from the route and neighbour the switch knows, run by the executor and parsed by scapy; the drops when the route or
the neighbour is missing. (The end-to-end tests against a real OVS are ``tests/test_tunnel_interop.py``.)"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

import numpy as np
import pytest
from scapy.contrib.geneve import GENEVE
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.layers.vxlan import VXLAN

from backends.tunnel import parse_config
from dpif import actions as A
from dpif import key as K
from ofproto import tlvmap
from ofproto.rules import Flow, Instructions, Match, Output, SetField
from ofproto.tables import FlowTables
from tests.test_dp_actions import run_kernel
from tests.test_xlate import tcp_frame
from xlate.bridges import MODE_NORMAL, MODE_TABLES, PF_LOCAL, PF_TUNNEL, Bridges
from xlate.translate import UpcallCookies, translate
from xlate.tunnel import Egress

VM, TUN, LOCAL, PHY = 0, 1, 2, 3
SRC = int(ipaddress.IPv4Address("172.31.0.1"))
REMOTE = int(ipaddress.IPv4Address("172.31.0.2"))
OTHER = int(ipaddress.IPv4Address("172.31.0.3"))
LOCAL_MAC = 0x02AA00000001
PEER_MAC = 0x02BB00000002
FLAGS = np.array([0, PF_TUNNEL, PF_LOCAL, 0], dtype=np.int64)


class FakeUnderlay:
    """Routes every address of 172.31.0.0/24 through br-phy (bridge 1, LOCAL port 2); knows ``macs``."""

    def __init__(self, macs: dict[int, int] | None = None, routed: bool = True) -> None:
        self.macs = {REMOTE: PEER_MAC} if macs is None else macs
        self.routed = routed
        self.asked: list[int] = []

    def egress(self, remote: int, ipv6: bool, src: int | None) -> Egress | None:
        if not self.routed or remote >> 8 != REMOTE >> 8:
            return None
        return Egress(1, LOCAL, "br-phy", src or SRC, LOCAL_MAC, remote, 1500)

    def neighbor(self, ip: int, ipv6: bool, egress: Egress) -> int | None:
        return self.macs.get(ip)

    def resolve(self, ip: int, ipv6: bool, egress: Egress) -> None:
        self.asked.append(ip)


def bridges(options: dict[str, str], *actions: object, kind: str = "geneve",
            underlay: FakeUnderlay | None = None) -> Bridges:
    t = FlowTables(4)
    t.add(Flow(0, 10, Match(in_port=VM), Instructions(apply=tuple(actions) or (Output(TUN),))))
    ts = t.activate(t.compile())
    cfg, _warnings = parse_config("tun0", kind, options)
    return Bridges([ts, None], [MODE_TABLES, MODE_NORMAL], [-1, -1], np.array([0, 0, 1, 1, -1], dtype=np.int64),
                   np.full(5, -1, dtype=np.int64), {TUN: cfg}, underlay or FakeUnderlay())


def key_of(frame: bytes) -> list[int]:
    key = [0] * K.KEY_WORDS
    key[K.W_IN_PORT] = VM
    key[K.W_ETH_DST] = int.from_bytes(frame[:6], "big")
    key[K.W_ETH_SRC] = int.from_bytes(frame[6:12], "big")
    key[K.W_ETH_TYPE] = 0x0800
    key[K.W_NW] = 6 | frame[15] << 8 | frame[22] << 16
    key[K.W_NW_SRC], key[K.W_NW_DST] = 0x0A000001, 0x0A000002
    return key


def encapsulate(br: Bridges, frame: bytes) -> tuple[list[bytes], object]:
    """Translate ``frame`` from the VM port, run the program; the frames NORMAL got (the underlay's), the result."""
    res = translate(br, key_of(frame), FLAGS, UpcallCookies())
    sides: list[list] = [[], []]
    run_kernel([(128, frame, [int(w) for w in res.program()])], free=8, sides=sides)
    return [f for _head, f in sides[0]], res


@pytest.fixture
def frame() -> bytes:
    return tcp_frame()


def test_geneve_output_encapsulates_and_continues_in_the_underlay_bridge(frame: bytes) -> None:
    br = bridges({"remote_ip": "172.31.0.2", "key": "5001"})
    res = translate(br, key_of(frame), FLAGS, UpcallCookies())
    acts = A.decode(res.program())
    assert [op for op, _ in acts] == [A.OP_CLONE]
    inner = A.decode(acts[0][1])
    assert [op for op, _ in inner] == [A.OP_TNL_PUSH, A.OP_NORMAL]
    assert inner[1][1] == [1, LOCAL]      # br-phy's NORMAL, as received on its LOCAL port
    assert res.bridges == {0, 1} and not res.no_cache
    got, _ = encapsulate(br, frame)
    assert len(got) == 1
    pkt = Ether(got[0])
    assert pkt.src == "02:aa:00:00:00:01" and pkt.dst == "02:bb:00:00:00:02"
    assert pkt[IP].src == "172.31.0.1" and pkt[IP].dst == "172.31.0.2" and pkt[IP].ttl == 64
    assert pkt[IP].flags.DF and pkt[UDP].dport == 6081 and 32768 <= pkt[UDP].sport <= 61000
    assert pkt[GENEVE].vni == 5001 and bytes(pkt[GENEVE].payload) == frame


def test_vxlan_with_ttl_tos_and_checksum(frame: bytes) -> None:
    br = bridges({"remote_ip": "172.31.0.2", "key": "77", "ttl": "9", "tos": "0x20", "csum": "true",
                  "df_default": "false"}, kind="vxlan")
    got, _ = encapsulate(br, frame)
    pkt = Ether(got[0])
    assert pkt[IP].ttl == 9 and pkt[IP].tos == 0x20 and not pkt[IP].flags.DF
    assert pkt[UDP].dport == 4789 and pkt[UDP].chksum != 0 and pkt[VXLAN].vni == 77
    raw = IP(bytes(pkt[IP]))
    del raw[UDP].chksum
    assert IP(bytes(raw))[UDP].chksum == pkt[UDP].chksum     # scapy computes the same checksum
    assert bytes(pkt[VXLAN].payload) == frame


def test_tos_inherit_copies_each_frames_tos() -> None:
    """One megaflow for every TOS: the datapath copies the DSCP (tos=inherit) and the ECN bits per frame."""
    frame = bytearray(tcp_frame())
    frame[15] = 0xB8
    br = bridges({"remote_ip": "172.31.0.2", "tos": "inherit"})
    got, res = encapsulate(br, bytes(frame))
    assert Ether(got[0])[IP].tos == 0xB8
    assert res.mask[K.W_NW] & 0xFF00 == 0
    frame[15] = 0x01                                   # ECN ECT(1) alone: the outer header carries it too
    got, _ = encapsulate(bridges({"remote_ip": "172.31.0.2"}), bytes(frame))
    assert Ether(got[0])[IP].tos == 0x01


def test_flow_based_remote_and_key_come_from_the_flow(frame: bytes) -> None:
    br = bridges({"remote_ip": "flow", "key": "flow"}, SetField("tun_dst", OTHER), SetField("tun_id", 0x42),
                 Output(TUN), underlay=FakeUnderlay({OTHER: 0x02CC00000003}))
    got, _ = encapsulate(br, frame)
    pkt = Ether(got[0])
    assert pkt[IP].dst == "172.31.0.3" and pkt.dst == "02:cc:00:00:00:03" and pkt[GENEVE].vni == 0x42


def test_geneve_options_come_from_the_tlv_map(frame: bytes) -> None:
    tlvmap.place({0: (0xFFFF, 0x01, 4)})
    try:
        br = bridges({"remote_ip": "172.31.0.2"}, SetField("tun_metadata0", 0x1234), Output(TUN))
        got, _ = encapsulate(br, frame)
    finally:
        tlvmap.place({})
    g = Ether(got[0])[GENEVE]
    assert g.optionlen == 2
    assert bytes(g)[8:16] == bytes.fromhex("ffff0101" "00001234")


def test_an_unresolved_neighbour_is_asked_for_and_the_frame_dropped_uncached(frame: bytes) -> None:
    under = FakeUnderlay(macs={})
    br = bridges({"remote_ip": "172.31.0.2"}, Output(TUN), Output(VM + 0), underlay=under)
    res = translate(br, key_of(frame), FLAGS, UpcallCookies())
    assert res.no_cache == "tunnel_neigh_unresolved" and under.asked == [REMOTE]
    queues, drops, _ = run_kernel([(128, frame, [int(w) for w in res.program()])], free=8)
    assert drops[A.DROP_REASONS.index("tunnel_neigh_unresolved")] == 1
    # the positive twin: resolved, the same program shape encapsulates
    under.macs[REMOTE] = PEER_MAC
    got, res = encapsulate(br, frame)
    assert len(got) == 1 and not res.no_cache


def test_no_route_drops_with_its_reason_and_other_outputs_go_on(frame: bytes) -> None:
    t = FlowTables(4)
    t.add(Flow(0, 10, Match(in_port=VM), Instructions(apply=(Output(TUN), Output(PHY)))))
    ts = t.activate(t.compile())
    cfg, _ = parse_config("tun0", "geneve", {"remote_ip": "10.99.0.1"})
    br = Bridges([ts, None], [MODE_TABLES, MODE_NORMAL], [-1, -1], np.array([0, 0, 1, 0, -1], dtype=np.int64),
                 np.full(5, -1, dtype=np.int64), {TUN: cfg}, FakeUnderlay())
    res = translate(br, key_of(frame), FLAGS, UpcallCookies())
    assert "tunnel_no_route" in res.drop_reason
    queues, drops, _ = run_kernel([(128, frame, [int(w) for w in res.program()])], free=8)
    assert drops[A.DROP_REASONS.index("tunnel_no_route")] == 1
    assert queues[PHY] == [(128, frame)]      # the other output still happens


@pytest.fixture(autouse=True)
def _clean_tlv() -> Iterator[None]:
    yield
    tlvmap.place({})
