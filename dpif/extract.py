"""Flow key extraction: frames in the packet pool -> rows of the datapath key (``dpif.key``).

``extract_burst(data, meta, burst, n, keys, reasons) -> int`` rewrites ``keys[slot]`` (all
``KEY_WORDS`` words) for every ``slot`` in ``burst[:n]`` from the frame
``data[slot, meta[slot, META_HEAD] :][: meta[slot, META_LEN]]`` and its ingress port
``meta[slot, META_IN_PORT]``, following OVS's flow extraction (ovs-fields(7)):

* Ethernet, up to two VLAN tags (TPID 0x8100 or 0x88a8; ``W_VLAN_TCI`` outer, ``W_VLAN_TCI2`` inner),
  the ethertype after them (802.3 length: ``ETH_TYPE_NONE``, or the type of an LLC/SNAP header with
  OUI 0);
* IPv4 (options skipped), IPv6 (hop-by-hop, routing, destination-options and fragment headers
  skipped; a later fragment has protocol 44), ARP and RARP (Ethernet/IPv4 only; opcodes above 255
  give 0), fragment bits;
* TCP (ports, 12 flag bits), UDP, SCTP (ports), ICMPv4 / ICMPv6 (type, code), ICMPv6 neighbour
  solicitation / advertisement (target, source / target link-layer address option).

An IP packet is what its header says: its total (IPv4) or payload (IPv6) length must fit in the
frame, and bytes after it (Ethernet padding) are not read. Whatever is cut short or malformed is
left at 0 and what came before it is kept: a bad IPv4 or IPv6 header leaves only the Ethernet
words; a cut IPv6 extension header leaves the protocol 0; an L4 header shorter than its fixed part
(TCP 20, UDP 8, SCTP 12, ICMP 8 bytes) leaves ``W_TP`` 0; malformed ND options leave every ND word 0.

``reasons[i]`` is 0, or the ``classifier.drops`` reason for a frame the switch drops before any
lookup: ``DROP_RX_RUNT`` (under 14 bytes: only ``W_IN_PORT`` is set) or ``DROP_RX_VLAN_TRUNCATED``
(a tag whose TCI or following ethertype is cut short: ``W_ETH_TYPE`` is that tag's TPID). The
return value is how many frames got a reason. The plain-Python model is ``dpif.extract_ref``.

Tests: ``tests/test_dp_extract.py``; benchmark: ``python -m bench extract``.
"""

from __future__ import annotations

import numba
import numpy as np

from backends.pool import META_HEAD, META_IN_PORT, META_LEN
from classifier.drops import DROP_RX_RUNT, DROP_RX_VLAN_TRUNCATED
from classifier.wire import be16, be32, be48, be64, u8
from dpif import key as K

ETH_TYPE_IPV4 = 0x0800
ETH_TYPE_ARP = 0x0806
ETH_TYPE_RARP = 0x8035
ETH_TYPE_IPV6 = 0x86DD
ETH_TYPE_VLAN = 0x8100
ETH_TYPE_QINQ = 0x88A8
ETH_TYPE_MIN = 0x0600      # smaller values are 802.3 lengths

PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_HOPOPT = 0
PROTO_ROUTING = 43
PROTO_FRAGMENT = 44
PROTO_ICMPV6 = 58
PROTO_DSTOPTS = 60
PROTO_SCTP = 132

ND_SOLICIT = 135
ND_ADVERT = 136
ND_OPT_SLL = 1
ND_OPT_TLL = 2

_W_IN_PORT = K.W_IN_PORT
_W_ETH_DST = K.W_ETH_DST
_W_ETH_SRC = K.W_ETH_SRC
_W_VLAN_TCI = K.W_VLAN_TCI
_W_VLAN_TCI2 = K.W_VLAN_TCI2
_W_ETH_TYPE = K.W_ETH_TYPE
_W_NW = K.W_NW
_W_NW_SRC = K.W_NW_SRC
_W_NW_DST = K.W_NW_DST
_W_IPV6_SRC = K.W_IPV6_SRC
_W_IPV6_DST = K.W_IPV6_DST
_W_IPV6_LABEL = K.W_IPV6_LABEL
_W_TP = K.W_TP
_W_ARP_SHA = K.W_ARP_SHA
_W_ARP_THA = K.W_ARP_THA
_W_ND_TARGET = K.W_ND_TARGET
_KEY_WORDS = K.KEY_WORDS
_FRAG_ANY = K.FRAG_ANY
_FRAG_LATER = K.FRAG_LATER
_VLAN_CFI = K.VLAN_CFI
_ETH_TYPE_NONE = K.ETH_TYPE_NONE


@numba.njit(nogil=True, cache=True, _nrt=False, inline="always")
def _nd(d: np.ndarray, s: int, o: int, end: int, icmp_type: int, k: np.ndarray) -> None:
    """Neighbour solicitation / advertisement at ``o`` (the ICMPv6 header): target and link-layer option."""
    if o + 24 > end:
        return
    want = ND_OPT_SLL if icmp_type == ND_SOLICIT else ND_OPT_TLL
    lla = np.int64(0)
    seen = False
    q = o + 24
    while q + 8 <= end:
        olen = u8(d, s, q + 1) * 8
        if olen == 0 or q + olen > end:
            return                                   # malformed: no ND field
        if u8(d, s, q) == want and olen == 8:
            if seen:
                return                               # a second address option: malformed
            seen = True
            lla = be48(d, s, q + 2)
        q += olen
    k[s, _W_ND_TARGET] = be64(d, s, o + 8)
    k[s, _W_ND_TARGET + 1] = be64(d, s, o + 16)
    if icmp_type == ND_SOLICIT:
        k[s, _W_ARP_SHA] = lla
    else:
        k[s, _W_ARP_THA] = lla


@numba.njit(nogil=True, cache=True, _nrt=False, inline="always")
def _l4(d: np.ndarray, s: int, o: int, end: int, proto: int, v6: bool, k: np.ndarray) -> None:
    """The L4 header at ``o`` (the IP packet ends at ``end``)."""
    if proto == PROTO_TCP:
        if o + 20 <= end:
            flags = ((u8(d, s, o + 12) & 0xF) << 8) | u8(d, s, o + 13)
            k[s, _W_TP] = be16(d, s, o) | be16(d, s, o + 2) << 16 | flags << 32
    elif proto == PROTO_UDP:
        if o + 8 <= end:
            k[s, _W_TP] = be16(d, s, o) | be16(d, s, o + 2) << 16
    elif proto == PROTO_SCTP:
        if o + 12 <= end:
            k[s, _W_TP] = be16(d, s, o) | be16(d, s, o + 2) << 16
    elif proto == PROTO_ICMP:
        if not v6 and o + 8 <= end:
            k[s, _W_TP] = u8(d, s, o) | u8(d, s, o + 1) << 16
    elif proto == PROTO_ICMPV6:
        if v6 and o + 8 <= end:
            t = u8(d, s, o)
            c = u8(d, s, o + 1)
            k[s, _W_TP] = t | c << 16
            if (t == ND_SOLICIT or t == ND_ADVERT) and c == 0:
                _nd(d, s, o, end, t, k)


@numba.njit(nogil=True, cache=True, _nrt=False, inline="always")
def _ipv4(d: np.ndarray, s: int, o: int, end: int, k: np.ndarray) -> None:
    if o + 20 > end:
        return
    ihl = (u8(d, s, o) & 0xF) * 4
    total = be16(d, s, o + 2)
    if ihl < 20 or total < ihl or o + total > end:
        return
    end = o + total                                  # padding after the packet is not read
    proto = u8(d, s, o + 9)
    off = be16(d, s, o + 6)
    frag = 0
    if off & 0x3FFF:                                 # MF or an offset
        frag = _FRAG_ANY
        if off & 0x1FFF:
            frag = _FRAG_ANY | _FRAG_LATER
    k[s, _W_NW] = proto | u8(d, s, o + 1) << 8 | u8(d, s, o + 8) << 16 | frag << 24
    k[s, _W_NW_SRC] = be32(d, s, o + 12)
    k[s, _W_NW_DST] = be32(d, s, o + 16)
    if frag & _FRAG_LATER:
        return
    _l4(d, s, o + ihl, end, proto, False, k)


@numba.njit(nogil=True, cache=True, _nrt=False, inline="always")
def _ipv6(d: np.ndarray, s: int, o: int, end: int, k: np.ndarray) -> None:
    if o + 40 > end:
        return
    total = 40 + be16(d, s, o + 4)
    if o + total > end:
        return
    end = o + total
    vcl = be32(d, s, o)
    tos_ttl = ((vcl >> 20) & 0xFF) << 8 | u8(d, s, o + 7) << 16
    k[s, _W_IPV6_SRC] = be64(d, s, o + 8)
    k[s, _W_IPV6_SRC + 1] = be64(d, s, o + 16)
    k[s, _W_IPV6_DST] = be64(d, s, o + 24)
    k[s, _W_IPV6_DST + 1] = be64(d, s, o + 32)
    k[s, _W_IPV6_LABEL] = vcl & 0xFFFFF
    nh = u8(d, s, o + 6)
    q = o + 40
    frag = 0
    while True:                                      # every header is >= 8 bytes: the loop ends
        if nh == PROTO_HOPOPT or nh == PROTO_ROUTING or nh == PROTO_DSTOPTS:
            if q + 8 > end:
                break
            hl = (u8(d, s, q + 1) + 1) * 8
            if q + hl > end:
                break
            nh = u8(d, s, q)
            q += hl
        elif nh == PROTO_FRAGMENT:
            if q + 8 > end:
                break
            frag = _FRAG_ANY
            if be16(d, s, q + 2) & 0xFFF8:          # a later fragment: protocol 44, nothing beyond
                k[s, _W_NW] = PROTO_FRAGMENT | tos_ttl | (_FRAG_ANY | _FRAG_LATER) << 24
                return
            nh = u8(d, s, q)
            q += 8
        else:
            k[s, _W_NW] = nh | tos_ttl | frag << 24
            _l4(d, s, q, end, nh, True, k)
            return
    k[s, _W_NW] = tos_ttl | frag << 24               # an extension header cut short: protocol unknown


@numba.njit(nogil=True, cache=True, _nrt=False, inline="always")
def _arp(d: np.ndarray, s: int, o: int, end: int, k: np.ndarray) -> None:
    if o + 28 > end or be32(d, s, o) != 0x00010800 or u8(d, s, o + 4) != 6 or u8(d, s, o + 5) != 4:
        return
    op = be16(d, s, o + 6)
    if op <= 0xFF:
        k[s, _W_NW] = op
    k[s, _W_ARP_SHA] = be48(d, s, o + 8)
    k[s, _W_NW_SRC] = be32(d, s, o + 14)
    k[s, _W_ARP_THA] = be48(d, s, o + 18)
    k[s, _W_NW_DST] = be32(d, s, o + 24)


@numba.njit(nogil=True, cache=True, _nrt=False, inline="always")
def _frame(d: np.ndarray, s: int, o: int, end: int, k: np.ndarray) -> int:
    """Fill ``k[s]`` (already zero) from the frame ``d[s, o:end]``; return the drop reason or 0."""
    if o + 14 > end:
        return DROP_RX_RUNT
    k[s, _W_ETH_DST] = be48(d, s, o)
    k[s, _W_ETH_SRC] = be48(d, s, o + 6)
    p = o + 12                                       # the ethertype (or TPID) being read
    et = be16(d, s, p)
    if et == ETH_TYPE_VLAN or et == ETH_TYPE_QINQ:
        if p + 6 > end:
            k[s, _W_ETH_TYPE] = et
            return DROP_RX_VLAN_TRUNCATED
        k[s, _W_VLAN_TCI] = be16(d, s, p + 2) | _VLAN_CFI | et << 16
        p += 4
        et = be16(d, s, p)
        if et == ETH_TYPE_VLAN or et == ETH_TYPE_QINQ:
            if p + 6 > end:
                k[s, _W_ETH_TYPE] = et
                return DROP_RX_VLAN_TRUNCATED
            k[s, _W_VLAN_TCI2] = be16(d, s, p + 2) | _VLAN_CFI | et << 16
            p += 4
            et = be16(d, s, p)
    p += 2                                           # L3 (or LLC) starts here
    if et < ETH_TYPE_MIN:
        # 802.3: LLC AA-AA-03 and SNAP OUI 00-00-00 carry an ethertype
        if (p + 8 <= end and be32(d, s, p) == 0xAAAA0300 and be16(d, s, p + 4) == 0
                and be16(d, s, p + 6) >= ETH_TYPE_MIN):
            et = be16(d, s, p + 6)
            p += 8
        else:
            et = _ETH_TYPE_NONE
    k[s, _W_ETH_TYPE] = et
    if et == ETH_TYPE_IPV4:
        _ipv4(d, s, p, end, k)
    elif et == ETH_TYPE_IPV6:
        _ipv6(d, s, p, end, k)
    elif et == ETH_TYPE_ARP or et == ETH_TYPE_RARP:
        _arp(d, s, p, end, k)
    return 0


@numba.njit(nogil=True, cache=True, _nrt=False)
def extract_burst(data: np.ndarray, meta: np.ndarray, burst: np.ndarray, n: int, keys: np.ndarray,
                  reasons: np.ndarray) -> int:
    """Fill ``keys[burst[i]]`` for ``i < n`` from the slots' frames; ``reasons[i]`` = 0 or a drop reason.

    Returns the number of frames with a drop reason. A head or length outside the row is clamped
    to it.
    """
    cap = np.int64(data.shape[1])
    dropped = 0
    for i in range(n):
        s = burst[i]
        for w in range(_KEY_WORDS):
            keys[s, w] = 0
        keys[s, _W_IN_PORT] = np.int64(meta[s, META_IN_PORT]) & 0xFFFFFFFF
        head = max(min(np.int64(meta[s, META_HEAD]), cap), 0)     # clamped to 0 last: provably >= 0
        end = head + max(min(np.int64(meta[s, META_LEN]), cap - head), 0)
        r = _frame(data, s, head, end, keys)
        reasons[i] = r
        if r != 0:
            dropped += 1
    return dropped
