"""Addresses as ovs-vswitchd reads and prints them in its tunnel commands.

OVS keeps every tunnel address as 128 bits, IPv4 as IPv4-mapped IPv6 (``::ffff:a.b.c.d``); so do the modules of
this package (plain ints). The parsers accept exactly what OVS 3.1's ``ovs_scan``-based parsers accept (spaces
before numbers, ``0x`` / octal numbers where ``%i`` is used, out-of-range numbers keeping their low bits), because
``ovs-appctl`` users see the difference as an error or a different route.
"""

from __future__ import annotations

import ipaddress
import socket

V4_MAPPED = 0xFFFF << 32
V4_MAPPED_MASK = ((1 << 96) - 1) << 32      # the 96 bits that say "IPv4-mapped"
ALL_ONES = (1 << 128) - 1


def is_mapped(addr: int) -> bool:
    """Whether the 128-bit ``addr`` is an IPv4 address (IPv4-mapped)."""
    return addr & V4_MAPPED_MASK == V4_MAPPED


def mapped(ip: str | ipaddress.IPv4Address | ipaddress.IPv6Address | int) -> int:
    """``ip`` as OVS holds it: 128 bits, IPv4 mapped (``int`` is taken as already 128 bits)."""
    if isinstance(ip, int):
        return ip
    ip = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
    return V4_MAPPED | int(ip) if ip.version == 4 else int(ip)


def to_address(addr: int) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The 128-bit ``addr`` as an ``ipaddress`` object (IPv4 when it is mapped)."""
    return ipaddress.IPv4Address(addr & 0xFFFFFFFF) if is_mapped(addr) else ipaddress.IPv6Address(addr)


def prefix_mask(plen: int) -> int:
    """A 128-bit mask of ``plen`` leading ones."""
    return ALL_ONES ^ ((1 << (128 - plen)) - 1)


def format_mapped(addr: int) -> str:
    """``ipv6_format_mapped``: dotted IPv4 for a mapped address, else glibc's ``inet_ntop`` text."""
    if is_mapped(addr):
        return str(ipaddress.IPv4Address(addr & 0xFFFFFFFF))
    return socket.inet_ntop(socket.AF_INET6, addr.to_bytes(16, "big"))


def _skip_spaces(s: str, i: int) -> int:
    while i < len(s) and s[i] in " \t\n\v\f\r":
        i += 1
    return i


def scan_int(s: str, i: int, base: int, bits: int) -> tuple[int, int] | None:
    """``ovs_scan``'s integer conversion at ``s[i:]`` (spaces skipped, a sign, ``0x`` for base 0 / 16, octal
    for a leading 0 with base 0), keeping the low ``bits`` of the value: (value, end) or None."""
    i = _skip_spaces(s, i)
    negative = i < len(s) and s[i] == "-"
    if i < len(s) and s[i] in "+-":
        i += 1
    if base in (0, 16) and s[i:i + 2] in ("0x", "0X"):
        base, i = 16, i + 2
    elif base == 0:
        base = 8 if s[i:i + 1] == "0" else 10
    value = digits = 0
    while i < len(s):
        d = int(s[i], 16) if s[i] in "0123456789abcdefABCDEF" else -1
        if d < 0 or d >= base:
            break
        value, digits, i = value * base + d, digits + 1, i + 1
    if not digits:
        return None
    return (-value if negative else value) & ((1 << bits) - 1), i


def _scan_ipv4(s: str, i: int) -> tuple[int, int] | None:
    """``IP_SCAN_FMT`` (four ``%hhu`` joined by dots) at ``s[i:]``: (32-bit address, end)."""
    value = 0
    for k in range(4):
        if k:
            if s[i:i + 1] != ".":
                return None
            i += 1
        got = scan_int(s, i, 10, 8)
        if got is None:
            return None
        octet, i = got
        value = value << 8 | octet
    return value, i


def parse_ipv4_cidr(s: str) -> tuple[int, int] | None:
    """``ip_parse_cidr``: ``a.b.c.d``, ``a.b.c.d/len`` or ``a.b.c.d/mask`` (a CIDR mask), nothing after it:
    (mapped address, prefix length in IPv4 bits) or None."""
    got = _scan_ipv4(s, 0)
    if got is None:
        return None
    ip, i = got
    mask = 0xFFFFFFFF
    if s[i:i + 1] == "/":
        dotted = _scan_ipv4(s, i + 1)
        if dotted is not None:
            mask, i = dotted
        else:
            plen = scan_int(s, i + 1, 10, 32)
            if plen is None:
                return None                       # "ip/" then junk: only the address was scanned
            value, i = plen
            value = value - (1 << 32) if value & (1 << 31) else value
            if not 0 <= value <= 32:
                return None
            mask = (0xFFFFFFFF << (32 - value)) & 0xFFFFFFFF
    inverted = ~mask & 0xFFFFFFFF
    if inverted & (inverted + 1):                 # not a CIDR mask
        return None
    if i != len(s):
        return None
    return V4_MAPPED | ip, 32 - inverted.bit_length()


_IPV6_CHARS = frozenset("0123456789abcdefABCDEF:.")


def _scan_ipv6_text(s: str, i: int) -> tuple[int, int] | None:
    """``IPV6_SCAN_FMT`` then ``inet_pton``: (address, end) or None."""
    j = i
    while j < len(s) and s[j] in _IPV6_CHARS and j - i < 46:
        j += 1
    if j == i:
        return None
    try:
        return int.from_bytes(socket.inet_pton(socket.AF_INET6, s[i:j]), "big"), j
    except OSError:
        return None


def parse_ipv6_cidr(s: str) -> tuple[int, int] | None:
    """``ipv6_parse_cidr``: an IPv6 address, optionally ``/len`` or ``/mask`` (CIDR), nothing after it:
    (address, prefix length) or None."""
    got = _scan_ipv6_text(s, _skip_spaces(s, 0))
    if got is None:
        return None
    ip, i = got
    plen = 128
    if s[i:i + 1] == "/":
        n = scan_int(s, i + 1, 10, 32)
        if n is not None:
            value, i = n
            value = value - (1 << 32) if value & (1 << 31) else value
            if not 0 <= value <= 128:
                return None
            plen = value
        else:
            m = _scan_ipv6_text(s, i + 1)
            if m is None:
                return None
            mask, i = m
            inverted = ~mask & ALL_ONES
            if inverted & (inverted + 1):
                return None
            plen = 128 - inverted.bit_length()
    if i != len(s):
        return None
    return ip, plen


def parse_ip(s: str) -> int | None:
    """``inet_pton`` of an IPv4 address (strict), mapped; None if it is not one."""
    try:
        return V4_MAPPED | int.from_bytes(socket.inet_pton(socket.AF_INET, s), "big")
    except OSError:
        return None


def parse_ipv6(s: str) -> int | None:
    """``inet_pton`` of an IPv6 address (strict); None if it is not one."""
    try:
        return int.from_bytes(socket.inet_pton(socket.AF_INET6, s), "big")
    except OSError:
        return None


def parse_host(s: str) -> int | None:
    """``tnl/neigh/set``'s address: IPv6 when it holds a colon, else IPv4 (both strict), mapped."""
    return parse_ipv6(s) if ":" in s else parse_ip(s)


def scan_pkt_mark(s: str) -> int | None:
    """``ovs_scan(s, "pkt_mark=%i")``: the mark (low 32 bits; anything after the number ignored) or None."""
    if not s.startswith("pkt_mark="):
        return None
    got = scan_int(s, len("pkt_mark="), 0, 32)
    return None if got is None else got[0]


def scan_u32(s: str) -> int | None:
    """``ovs_scan(s, "%u")`` (a prefix of ``s``; low 32 bits) or None."""
    got = scan_int(s, 0, 10, 32)
    return None if got is None else got[0]


def parse_mac(s: str) -> bytes | None:
    """``eth_addr_from_string``: six ``%hhx`` joined by colons, nothing after: the 6 bytes or None."""
    out, i = bytearray(), 0
    for k in range(6):
        if k:
            if s[i:i + 1] != ":":
                return None
            i += 1
        got = scan_int(s, i, 16, 8)
        if got is None:
            return None
        out.append(got[0])
        i = got[1]
    return bytes(out) if i == len(s) else None


def format_mac(mac: bytes) -> str:
    """``ETH_ADDR_FMT``."""
    return ":".join(f"{b:02x}" for b in mac)
