"""What the real ``ovs-ofctl`` puts on the wire for a flow: it connects to a stand-in switch on a unix
socket here (HELLO, table-features and barrier answered), sends its flow-mod, and we keep the bytes.
``ovs-ofctl``'s own encoder is the byte-for-byte oracle of an action's encoding."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import tempfile
import threading

OFPT_FLOW_MOD, OFPT_MULTIPART_REQUEST, OFPT_BARRIER_REQUEST, OFPT_ECHO_REQUEST = 14, 18, 20, 2
OFPIT_APPLY_ACTIONS = 4


def flow_mod_bytes(flow: str, proto: str = "OpenFlow15") -> bytes:
    """The flow-mod ``ovs-ofctl -O proto add-flow`` sends for ``flow`` (AssertionError with its stderr when it
    refuses the flow)."""
    with tempfile.TemporaryDirectory(prefix="ofcap-") as d:
        path = os.path.join(d, "s.sock")
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(path)
        srv.listen(1)
        srv.settimeout(15)
        got: list[bytes] = []
        th = threading.Thread(target=_serve, args=(srv, got), daemon=True)
        th.start()
        try:
            p = subprocess.run(["ovs-ofctl", "--timeout=10", "--no-names", "-O", proto, "add-flow", f"unix:{path}",
                                flow], capture_output=True, text=True, timeout=20)
            th.join(10)
        finally:
            srv.close()
        assert p.returncode == 0, (flow, p.stderr)
        assert got, f"ovs-ofctl sent no flow-mod for {flow}"
        return got[0]


def _serve(srv: socket.socket, got: list[bytes]) -> None:
    try:
        c, _ = srv.accept()
    except OSError:
        return
    c.settimeout(10)
    buf = b""
    try:
        c.sendall(struct.pack("!BBHI", 6, 0, 8, 1))
        while True:
            while len(buf) < 8 or len(buf) < struct.unpack_from("!H", buf, 2)[0]:
                more = c.recv(65536)
                if not more:
                    return
                buf += more
            n = struct.unpack_from("!H", buf, 2)[0]
            m, buf = buf[:n], buf[n:]
            v, t, _n, xid = struct.unpack_from("!BBHI", m)
            if t == OFPT_FLOW_MOD:
                got.append(m)
            elif t == OFPT_MULTIPART_REQUEST:     # table features: none
                c.sendall(struct.pack("!BBHIHH4x", v, t + 1, 16, xid, struct.unpack_from("!H", m, 8)[0], 0))
            elif t == OFPT_BARRIER_REQUEST:
                c.sendall(struct.pack("!BBHI", v, t + 1, 8, xid))
            elif t == OFPT_ECHO_REQUEST:
                c.sendall(struct.pack("!BBHI", v, 3, n, xid) + m[8:])
    except OSError:
        return
    finally:
        c.close()


def apply_actions(flow_mod: bytes) -> bytes:
    """The action bytes of an OpenFlow 1.3+ flow-mod's apply-actions instruction (its only instruction)."""
    mlen = struct.unpack_from("!H", flow_mod, 50)[0]
    off = 48 + (mlen + 7) // 8 * 8
    kind, ilen = struct.unpack_from("!HH", flow_mod, off)
    assert kind == OFPIT_APPLY_ACTIONS, kind
    return flow_mod[off + 8:off + ilen]


def ofctl_actions(flow: str) -> bytes:
    """The apply-action bytes ``ovs-ofctl -O OpenFlow15`` encodes for ``flow``."""
    return apply_actions(flow_mod_bytes(flow))
