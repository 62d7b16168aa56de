"""Plain-Python reference model of the classifier: parsing, OVS VLAN modes, the L2 table, NORMAL switching.

Written independently of the numba kernels from the same rules (OVS's ``vswitch.xml`` for
VLAN modes, the table rules in ``classifier.l2table``), so the tests can check the kernels
against it frame by frame and the benchmark can compare their speed. Nothing here is fast.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from classifier import drops as D
from classifier import keys as K


def parse_reference(frame: bytes) -> dict[int, int]:
    """Header fields of ``frame`` as ``{K_* column: value}`` (absent fields omitted or 0)."""
    k: dict[int, int] = {}
    n = len(frame)
    if n < 14:
        k[K.K_DROP] = D.DROP_RX_RUNT
        return k
    k[K.K_ETH_DST] = int.from_bytes(frame[0:6], "big")
    k[K.K_ETH_SRC] = int.from_bytes(frame[6:12], "big")
    (et,) = struct.unpack_from("!H", frame, 12)
    flags = 0
    off = 14
    if et == 0x8100:
        if n < 18:
            k[K.K_DROP] = D.DROP_RX_VLAN_TRUNCATED
            return k
        (tci, et) = struct.unpack_from("!HH", frame, 14)
        k[K.K_VLAN_VID] = (tci & 0xFFF) | K.VID_PRESENT
        k[K.K_VLAN_PCP] = tci >> 13
        flags |= K.F_VLAN
        off = 18
    if et < 0x600:
        et = K.ETH_TYPE_NONE
    k[K.K_ETH_TYPE] = et
    k[K.K_L3_OFS] = off

    def l4(o: int, proto: int) -> None:
        nonlocal flags
        need = {6: 20, 17: 8, 1: 4, 58: 4}.get(proto)
        if need is None:
            return
        if o + need > n:
            flags |= K.F_L4_TRUNCATED
            return
        if proto in (6, 17):
            k[K.K_TP_SRC], k[K.K_TP_DST] = struct.unpack_from("!HH", frame, o)
        else:
            k[K.K_TP_SRC], k[K.K_TP_DST] = frame[o], frame[o + 1]
        flags |= K.F_L4

    if et == 0x0800:
        ihl = (frame[off] & 0xF) * 4 if off < n else 0
        if off + 20 > n or frame[off] >> 4 != 4 or ihl < 20 or off + ihl > n:
            flags |= K.F_L3_TRUNCATED
        else:
            k[K.K_IP_TOS] = frame[off + 1]
            proto = frame[off + 9]
            k[K.K_IP_PROTO] = proto
            k[K.K_NW_SRC] = int.from_bytes(frame[off + 12 : off + 16], "big")
            k[K.K_NW_DST] = int.from_bytes(frame[off + 16 : off + 20], "big")
            (frag,) = struct.unpack_from("!H", frame, off + 6)
            if frag & 0x3FFF:
                flags |= K.F_IP_FRAG
            if frag & 0x1FFF:
                flags |= K.F_IP_LATER_FRAG
            else:
                l4(off + ihl, proto)
    elif et == 0x86DD:
        if off + 40 > n:
            flags |= K.F_L3_TRUNCATED
        else:
            k[K.K_IP_TOS] = ((frame[off] & 0xF) << 4) | (frame[off + 1] >> 4)
            src = int.from_bytes(frame[off + 8 : off + 24], "big")
            dst = int.from_bytes(frame[off + 24 : off + 40], "big")
            k[K.K_IPV6_SRC_HI], k[K.K_IPV6_SRC_LO] = src >> 64, src & (2**64 - 1)
            k[K.K_IPV6_DST_HI], k[K.K_IPV6_DST_LO] = dst >> 64, dst & (2**64 - 1)
            nh = frame[off + 6]
            p = off + 40
            truncated = False
            for _ in range(8):
                if nh not in (0, 43, 44, 60):
                    break
                if p + 8 > n:
                    truncated = True
                    break
                nxt = frame[p]
                if nh == 44:
                    flags |= K.F_IP_FRAG
                    if struct.unpack_from("!H", frame, p + 2)[0] & 0xFFF8:
                        flags |= K.F_IP_LATER_FRAG
                    p += 8
                else:
                    p += (frame[p + 1] + 1) * 8
                nh = nxt
            k[K.K_IP_PROTO] = nh
            if truncated:
                flags |= K.F_L3_TRUNCATED
            elif not flags & K.F_IP_LATER_FRAG:
                if p > n:
                    flags |= K.F_L3_TRUNCATED
                else:
                    l4(p, nh)
    elif et == 0x0806:
        if off + 28 > n:
            flags |= K.F_L3_TRUNCATED
        else:
            htype, ptype, hlen, plen, op = struct.unpack_from("!HHBBH", frame, off)
            if (htype, ptype, hlen, plen) == (1, 0x0800, 6, 4):
                k[K.K_ARP_OP] = op
                k[K.K_ARP_SHA] = int.from_bytes(frame[off + 8 : off + 14], "big")
                k[K.K_ARP_SPA] = int.from_bytes(frame[off + 14 : off + 18], "big")
                k[K.K_ARP_THA] = int.from_bytes(frame[off + 18 : off + 24], "big")
                k[K.K_ARP_TPA] = int.from_bytes(frame[off + 24 : off + 28], "big")
    k[K.K_FLAGS] = flags
    return k


@dataclass
class PortVlanConfig:
    """A port's VLAN settings with OVS's meaning (``Port.tag``, ``trunks``, ``vlan_mode``)."""

    tag: int | None = None
    trunks: tuple[int, ...] = ()
    vlan_mode: str | None = None
    up: bool = True

    @property
    def mode(self) -> str:
        if self.vlan_mode:
            return self.vlan_mode
        return "access" if self.tag is not None else "trunk"

    def _in_trunks(self, vlan: int) -> bool:
        return not self.trunks or vlan in self.trunks

    def ingress(self, vid: int) -> int | None:
        """Bridge VLAN of a frame arriving with VID ``vid`` (0: untagged/priority), or None."""
        mode, tag = self.mode, self.tag or 0
        if mode == "access":
            return tag if vid == 0 else None
        if mode == "trunk":
            return vid if self._in_trunks(vid) else None
        # native-tagged / native-untagged
        if vid == 0:
            return tag
        return vid if (vid == tag or self._in_trunks(vid)) else None

    def egress(self, vlan: int) -> int | None:
        """None when frames of ``vlan`` do not leave this port, else 0 (untagged) or the VID."""
        if not self.up:
            return None
        mode, tag = self.mode, self.tag or 0
        if mode == "access":
            return 0 if vlan == tag else None
        if mode == "trunk":
            return vlan if self._in_trunks(vlan) else None
        if vlan != tag and not self._in_trunks(vlan):
            return None
        if mode == "native-untagged" and vlan == tag:
            return 0
        return vlan


@dataclass
class _Entry:
    port: int
    last_seen: int
    static: bool = False


@dataclass
class ReferenceSwitch:
    """NORMAL switching over ports with VLAN configs, with its own L2 table."""

    ports: list[PortVlanConfig]
    limit: int = 8192
    aging: int = 300
    table: dict[tuple[int, int], _Entry] = field(default_factory=dict)
    events: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            ("learned", "moved", "aged", "table_full", "static_move_refused", "hits", "misses"), 0
        )
    )
    drops: dict[tuple[int, int], int] = field(default_factory=dict)

    def _learned_count(self) -> int:
        return sum(1 for e in self.table.values() if not e.static)

    def learn_static_free(self, vlan: int, mac: int, port: int, now: int) -> None:
        """Put a learned entry in the table directly (benchmark set-up), without the limit check."""
        self.table[(vlan, mac)] = _Entry(port, now)

    def add_static(self, vlan: int, mac: int, port: int) -> None:
        self.table[(vlan, mac)] = _Entry(port, 0, True)

    def age(self, now: int) -> int:
        old = [key for key, e in self.table.items() if not e.static and now - e.last_seen >= self.aging]
        for key in old:
            del self.table[key]
        self.events["aged"] += len(old)
        return len(old)

    def _drop(self, port: int, reason: int) -> None:
        self.drops[(port, reason)] = self.drops.get((port, reason), 0) + 1

    def _learn(self, vlan: int, mac: int, port: int, now: int) -> None:
        e = self.table.get((vlan, mac))
        if e is not None:
            if e.static:
                if e.port != port:
                    self.events["static_move_refused"] += 1
                return
            if e.port != port:
                self.events["moved"] += 1
            e.port, e.last_seen = port, now
            return
        if self._learned_count() >= self.limit:
            self.events["table_full"] += 1
            return
        self.table[(vlan, mac)] = _Entry(port, now)
        self.events["learned"] += 1

    def process(self, frames: list[tuple[bytes, int]], now: int) -> dict[int, list[tuple[int, int]]]:
        """Switch a burst of (frame, in_port); return ``{port: [(frame index, egress edit)]}``."""
        queues: dict[int, list[tuple[int, int]]] = {p: [] for p in range(len(self.ports))}
        for index, (frame, in_port) in enumerate(frames):
            k = parse_reference(frame)
            if k.get(K.K_DROP):
                self._drop(in_port, k[K.K_DROP])
                continue
            src, dst = k[K.K_ETH_SRC], k[K.K_ETH_DST]
            if src >> 40 & 1:
                self._drop(in_port, D.DROP_RX_SRC_MULTICAST)
                continue
            if dst >> 4 == 0x0180C2000000 >> 4:
                self._drop(in_port, D.DROP_RESERVED_MULTICAST)
                continue
            tagged = bool(k.get(K.K_VLAN_VID, 0) & K.VID_PRESENT)
            vid = k.get(K.K_VLAN_VID, 0) & 0xFFF
            vlan = self.ports[in_port].ingress(vid) if self.ports[in_port].up else None
            if vlan is None:
                self._drop(in_port, D.DROP_VLAN_FILTERED)
                continue
            self._learn(vlan, src, in_port, now)

            def edit(eg: int, tagged: bool = tagged, vid: int = vid) -> int:
                if eg == 0:
                    return 0 if tagged else -1
                return -1 if (tagged and vid == eg) else eg

            targets: list[int]
            if not dst >> 40 & 1 and (vlan, dst) in self.table:
                self.events["hits"] += 1
                out = self.table[(vlan, dst)].port
                if out == in_port:
                    self._drop(in_port, D.DROP_SAME_PORT)
                    continue
                eg = self.ports[out].egress(vlan)
                if eg is None:
                    reason = D.DROP_VLAN_FILTERED if self.ports[out].up else D.DROP_PORT_DOWN
                    self._drop(in_port, reason)
                    continue
                queues[out].append((index, edit(eg)))
                continue
            if not dst >> 40 & 1:
                self.events["misses"] += 1
            targets = [
                q for q in range(len(self.ports)) if q != in_port and self.ports[q].egress(vlan) is not None
            ]
            if not targets:
                self._drop(in_port, D.DROP_NO_OUTPUT_PORT)
                continue
            for q in targets:
                queues[q].append((index, edit(self.ports[q].egress(vlan))))
        return queues
