"""Switch ports: the packet pool, the ``Port`` interface and one backend per port type.

``open_port(type, name, **opts)`` opens a port by its OVSDB ``Interface.type``.
"""

from __future__ import annotations

from typing import Any

import numba_cache  # noqa: F401 - before any kernel: cached by the hash of the kernel sources
from backends.internal import InternalPort
from backends.patch import PatchPort
from backends.pool import PacketPool
from backends.port import Port, PortError
from backends.sriov import SriovVfPort
from backends.system import SystemPort
from backends.tap import TapPort
from backends.tunnel import TUNNEL_TYPES, TunnelPort
from backends.vhost_user import VhostUserClientPort, VhostUserPort

PORT_TYPES: dict[str, type[Port]] = {
    "": SystemPort,
    "system": SystemPort,
    "tap": TapPort,
    "internal": InternalPort,
    "dpdkvhostuser": VhostUserPort,
    "dpdkvhostuserclient": VhostUserClientPort,
    "sriov-vf": SriovVfPort,
    "patch": PatchPort,
    **TUNNEL_TYPES,
}


def _coerce(value: Any) -> Any:
    """OVSDB ``options:`` values are strings: turn "true"/"false" and integers into Python values."""
    if not isinstance(value, str):
        return value
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    try:
        return int(value, 0)
    except ValueError:
        return value


def open_port(type: str, name: str, **opts: Any) -> Port:
    """Open the port ``name`` of OVSDB ``Interface.type`` ``type`` with backend options ``opts``.

    Option values may be strings as OVSDB stores them ("true", "4096", ...).
    """
    cls = PORT_TYPES.get(type)
    if cls is None:
        raise PortError(f"interface {name}: unsupported type {type!r} (supported: "
                        f"{', '.join(repr(t) for t in PORT_TYPES)})")
    try:
        return cls(name, **{k: _coerce(v) for k, v in opts.items()})
    except TypeError as e:
        raise PortError(f"interface {name}: bad options for type {type!r}: {e}") from e


__all__ = [
    "PacketPool", "Port", "PortError", "TapPort", "InternalPort", "SystemPort", "VhostUserPort",
    "VhostUserClientPort", "SriovVfPort", "PatchPort", "TunnelPort", "open_port", "PORT_TYPES",
]
