"""OpenFlow 1.0, 1.3, 1.4 and 1.5 messages, declared as data, with one generic encoder and decoder.

Every message body and every structure is a list of ``(name, kind)`` pairs (``LAYOUTS``):

* a ``struct`` code (``B``, ``H``, ``I``, ``Q``, ``16s``, ...; network byte order), ``pad`` (``"4x"``);
* ``mac`` (6 bytes as an int), ``str<N>`` (NUL-padded text);
* ``rest`` (the remaining bytes), ``list:<layout>`` (structures to the end of the message),
  ``len:<field>`` (the byte length of the field named, filled in on encode);
* the composite kinds ``match13`` (OXM, padded to 8), ``match10`` (40-byte wildcard match),
  ``actions13``/``actions10`` (to the end, or sized by a ``len:`` field), ``instructions``,
  ``hello_elements``, ``mp13``/``mp10`` (multipart / stats bodies chosen by type), ``oxs`` (OpenFlow 1.5
  flow statistics: duration, idle_time, flow_count, packet_count, byte_count), ``props:<layout>`` (1.4+
  property lists: TLVs of type and length, each padded to 8 bytes, the length counting the header).

OpenFlow 1.4 and 1.5 (``OFP14``, ``OFP15``) share 1.3's layouts except where the wire differs: ports and port
stats with properties, flow-mod and flow stats with ``importance``, asynchronous configuration as properties, the
1.5 packet-out with a match, the 1.5 flow description with OXS statistics, role status and bundles.

A message is a ``Msg``: ``version``, ``type`` (the name, e.g. ``"flow_mod"``), ``xid`` and its
fields as attributes. Matches are dicts ``field -> value`` or ``field -> (value, mask)`` with the
OXM field names (``in_port``, ``eth_dst``, ``vlan_vid``, ``ipv4_src``, ...; MACs and IPv4 addresses
as ints, IPv6 as 128-bit ints); OpenFlow 1.0 matches use the same names, with ``wildcards``
computed from what is present. Actions and instructions are dicts with a ``type`` key.
``decode`` raises ``OfpError`` with the OpenFlow error type and code a switch should answer with.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

from ofproto import fields as _fields

OFP10, OFP13, OFP14, OFP15 = 0x01, 0x04, 0x05, 0x06
HEADER = struct.Struct("!BBHI")
OFP_NO_BUFFER = 0xFFFFFFFF
OFPAT_EXPERIMENTER = 0xFFFF   # OpenFlow 1.0's OFPAT_VENDOR too

# ---------------------------------------------------------------- errors (OpenFlow 1.3 numbering; 1.0 in comments)
OFPET_HELLO_FAILED, OFPET_BAD_REQUEST, OFPET_BAD_ACTION, OFPET_BAD_INSTRUCTION, OFPET_BAD_MATCH = 0, 1, 2, 3, 4
OFPET_FLOW_MOD_FAILED = 5
OFPET_BUNDLE_FAILED = 17   # 1.4+ (1.3: the ONF extension's experimenter error)
OFPBFC_UNKNOWN, OFPBFC_EPERM, OFPBFC_BAD_ID, OFPBFC_BUNDLE_EXIST, OFPBFC_BUNDLE_CLOSED = 0, 1, 2, 3, 4
OFPBFC_OUT_OF_BUNDLES, OFPBFC_BAD_TYPE, OFPBFC_BAD_FLAGS, OFPBFC_MSG_BAD_LEN, OFPBFC_MSG_BAD_XID = 5, 6, 7, 8, 9
OFPBFC_MSG_UNSUP, OFPBFC_MSG_CONFLICT, OFPBFC_MSG_TOO_MANY, OFPBFC_MSG_FAILED, OFPBFC_TIMEOUT = 10, 11, 12, 13, 14
#: OVS's Nicira error (experimenter 0x2320, code 22) for a bundled message of another version than the bundle's
NXBFC_BAD_VERSION = 22
NX_VENDOR_ID = 0x00002320
#: the ONF extension that carries bundles in OpenFlow 1.3 (experimenter messages 2300 / 2301; errors 2300 + code)
ONF_VENDOR_ID = 0x4F4E4600
ONF_ET_BUNDLE_CONTROL, ONF_ET_BUNDLE_ADD_MESSAGE = 2300, 2301
ONF_BUNDLE_ERROR_BASE = 2300
OFPBRC_BAD_VERSION, OFPBRC_BAD_TYPE, OFPBRC_BAD_MULTIPART, OFPBRC_BAD_EXPERIMENTER, OFPBRC_BAD_LEN = 0, 1, 2, 3, 6
OFPBAC_BAD_TYPE, OFPBAC_BAD_LEN = 0, 1
OFPBIC_UNKNOWN_INST, OFPBIC_BAD_LEN = 0, 6
OFPBMC_BAD_TYPE, OFPBMC_BAD_LEN, OFPBMC_BAD_FIELD, OFPBMC_DUP_FIELD = 0, 1, 6, 10


class OfpError(Exception):
    """A message that cannot be decoded: answer with OFPT_ERROR ``err_type``/``code``."""

    def __init__(self, err_type: int, code: int, why: str) -> None:
        super().__init__(why)
        self.err_type = err_type
        self.code = code


@dataclass
class Msg:
    """One OpenFlow message: ``version``, ``type`` name, ``xid`` and the fields of its layout."""

    version: int
    type: str
    xid: int = 0
    fields: dict[str, Any] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["fields"][name]
        except KeyError:
            raise AttributeError(name) from None

    def get(self, name: str, default: Any = None) -> Any:
        """A field, or ``default`` when absent."""
        return self.fields.get(name, default)


# ---------------------------------------------------------------- message types
TYPES13 = {
    "hello": 0, "error": 1, "echo_request": 2, "echo_reply": 3, "experimenter": 4, "features_request": 5,
    "features_reply": 6, "get_config_request": 7, "get_config_reply": 8, "set_config": 9, "packet_in": 10,
    "flow_removed": 11, "port_status": 12, "packet_out": 13, "flow_mod": 14, "group_mod": 15, "port_mod": 16,
    "table_mod": 17, "multipart_request": 18, "multipart_reply": 19, "barrier_request": 20, "barrier_reply": 21,
    "role_request": 24, "role_reply": 25, "get_async_request": 26, "get_async_reply": 27, "set_async": 28,
    "meter_mod": 29,
}
TYPES10 = {
    "hello": 0, "error": 1, "echo_request": 2, "echo_reply": 3, "vendor": 4, "features_request": 5,
    "features_reply": 6, "get_config_request": 7, "get_config_reply": 8, "set_config": 9, "packet_in": 10,
    "flow_removed": 11, "port_status": 12, "packet_out": 13, "flow_mod": 14, "port_mod": 15,
    "stats_request": 16, "stats_reply": 17, "barrier_request": 18, "barrier_reply": 19,
}
TYPES14 = {**TYPES13, "role_status": 30, "table_status": 31, "requestforward": 32, "bundle_control": 33,
           "bundle_add_message": 34}
TYPES15 = {**TYPES14, "controller_status": 35}
TYPES = {OFP15: TYPES15, OFP14: TYPES14, OFP13: TYPES13, OFP10: TYPES10}
TYPE_NAMES = {v: {n: t for t, n in types.items()} for v, types in TYPES.items()}

# ---------------------------------------------------------------- layouts (the data)
_PORT_STATS = [(n, "Q") for n in ("rx_packets", "tx_packets", "rx_bytes", "tx_bytes", "rx_dropped", "tx_dropped",
                                  "rx_errors", "tx_errors", "rx_frame_err", "rx_over_err", "rx_crc_err",
                                  "collisions")]
_DESC = [("mfr_desc", "str256"), ("hw_desc", "str256"), ("sw_desc", "str256"), ("serial_num", "str32"),
         ("dp_desc", "str256")]
_FLOW_FIXED13 = [("cookie", "Q"), ("cookie_mask", "Q"), ("table_id", "B"), ("command", "B"), ("idle_timeout", "H"),
                 ("hard_timeout", "H"), ("priority", "H"), ("buffer_id", "I"), ("out_port", "I"),
                 ("out_group", "I"), ("flags", "H"), ("pad", "2x")]
#: SET_ASYNC / GET_ASYNC_REPLY: which reasons of packet-in, port-status and flow-removed a controller gets, as
#: bitmaps by reason number, for the master/equal role and for the slave role
_ASYNC13 = [(f"{kind}_{role}", "I") for kind in ("packet_in", "port_status", "flow_removed")
            for role in ("master", "slave")]

LAYOUTS: dict[tuple[int, str], list[tuple[str, str]]] = {
    # ---- OpenFlow 1.3 messages
    (OFP13, "hello"): [("elements", "hello_elements")],
    (OFP13, "error"): [("err_type", "H"), ("code", "H"), ("data", "rest")],
    (OFP13, "echo_request"): [("data", "rest")],
    (OFP13, "echo_reply"): [("data", "rest")],
    (OFP13, "experimenter"): [("experimenter", "I"), ("exp_type", "I"), ("data", "rest")],
    (OFP13, "features_request"): [],
    (OFP13, "features_reply"): [("datapath_id", "Q"), ("n_buffers", "I"), ("n_tables", "B"), ("auxiliary_id", "B"),
                                ("pad", "2x"), ("capabilities", "I"), ("reserved", "I")],
    (OFP13, "get_config_request"): [],
    (OFP13, "get_config_reply"): [("flags", "H"), ("miss_send_len", "H")],
    (OFP13, "set_config"): [("flags", "H"), ("miss_send_len", "H")],
    (OFP13, "packet_in"): [("buffer_id", "I"), ("total_len", "H"), ("reason", "B"), ("table_id", "B"),
                           ("cookie", "Q"), ("match", "match13"), ("pad", "2x"), ("data", "rest")],
    (OFP13, "flow_removed"): [("cookie", "Q"), ("priority", "H"), ("reason", "B"), ("table_id", "B"),
                              ("duration_sec", "I"), ("duration_nsec", "I"), ("idle_timeout", "H"),
                              ("hard_timeout", "H"), ("packet_count", "Q"), ("byte_count", "Q"),
                              ("match", "match13")],
    (OFP13, "port_status"): [("reason", "B"), ("pad", "7x"), ("desc", "struct:port13")],
    (OFP13, "packet_out"): [("buffer_id", "I"), ("in_port", "I"), ("actions_len", "len:actions"), ("pad", "6x"),
                            ("actions", "actions13"), ("data", "rest")],
    (OFP13, "flow_mod"): [*_FLOW_FIXED13, ("match", "match13"), ("instructions", "instructions")],
    (OFP13, "port_mod"): [("port_no", "I"), ("pad", "4x"), ("hw_addr", "mac"), ("pad", "2x"), ("config", "I"),
                          ("mask", "I"), ("advertise", "I"), ("pad", "4x")],
    (OFP13, "multipart_request"): [("mp_type", "H"), ("flags", "H"), ("pad", "4x"), ("body", "mp13")],
    (OFP13, "multipart_reply"): [("mp_type", "H"), ("flags", "H"), ("pad", "4x"), ("body", "mp13")],
    (OFP13, "barrier_request"): [],
    (OFP13, "barrier_reply"): [],
    (OFP13, "role_request"): [("role", "I"), ("pad", "4x"), ("generation_id", "Q")],
    (OFP13, "role_reply"): [("role", "I"), ("pad", "4x"), ("generation_id", "Q")],
    (OFP13, "get_async_request"): [],
    (OFP13, "get_async_reply"): _ASYNC13,
    (OFP13, "set_async"): _ASYNC13,
    # ---- OpenFlow 1.3 structures
    (OFP13, "port13"): [("port_no", "I"), ("pad", "4x"), ("hw_addr", "mac"), ("pad", "2x"), ("name", "str16"),
                        ("config", "I"), ("state", "I"), ("curr", "I"), ("advertised", "I"), ("supported", "I"),
                        ("peer", "I"), ("curr_speed", "I"), ("max_speed", "I")],
    (OFP13, "mp_desc_reply"): _DESC,
    (OFP13, "mp_flow_request"): [("table_id", "B"), ("pad", "3x"), ("out_port", "I"), ("out_group", "I"),
                                 ("pad", "4x"), ("cookie", "Q"), ("cookie_mask", "Q"), ("match", "match13")],
    (OFP13, "flow_stats13"): [("length", "len:*"), ("table_id", "B"), ("pad", "1x"), ("duration_sec", "I"),
                              ("duration_nsec", "I"), ("priority", "H"), ("idle_timeout", "H"),
                              ("hard_timeout", "H"), ("flags", "H"), ("pad", "4x"), ("cookie", "Q"),
                              ("packet_count", "Q"), ("byte_count", "Q"), ("match", "match13"),
                              ("instructions", "instructions")],
    (OFP13, "mp_aggregate_reply"): [("packet_count", "Q"), ("byte_count", "Q"), ("flow_count", "I"), ("pad", "4x")],
    (OFP13, "table_stats13"): [("table_id", "B"), ("pad", "3x"), ("active_count", "I"), ("lookup_count", "Q"),
                               ("matched_count", "Q")],
    (OFP13, "mp_port_stats_request"): [("port_no", "I"), ("pad", "4x")],
    (OFP13, "table_features13"): [("length", "len:*"), ("table_id", "B"), ("pad", "5x"), ("name", "str32"),
                                  ("metadata_match", "Q"), ("metadata_write", "Q"), ("config", "I"),
                                  ("max_entries", "I"), ("properties", "rest")],
    (OFP13, "port_stats13"): [("port_no", "I"), ("pad", "4x"), *_PORT_STATS, ("duration_sec", "I"),
                              ("duration_nsec", "I")],
    # ---- OpenFlow 1.0 messages
    (OFP10, "hello"): [("data", "rest")],
    (OFP10, "error"): [("err_type", "H"), ("code", "H"), ("data", "rest")],
    (OFP10, "echo_request"): [("data", "rest")],
    (OFP10, "echo_reply"): [("data", "rest")],
    (OFP10, "vendor"): [("vendor", "I"), ("data", "rest")],
    (OFP10, "features_request"): [],
    (OFP10, "features_reply"): [("datapath_id", "Q"), ("n_buffers", "I"), ("n_tables", "B"), ("pad", "3x"),
                                ("capabilities", "I"), ("actions", "I"), ("ports", "list:port10")],
    (OFP10, "get_config_request"): [],
    (OFP10, "get_config_reply"): [("flags", "H"), ("miss_send_len", "H")],
    (OFP10, "set_config"): [("flags", "H"), ("miss_send_len", "H")],
    (OFP10, "packet_in"): [("buffer_id", "I"), ("total_len", "H"), ("in_port", "H"), ("reason", "B"),
                           ("pad", "1x"), ("data", "rest")],
    (OFP10, "flow_removed"): [("match", "match10"), ("cookie", "Q"), ("priority", "H"), ("reason", "B"),
                              ("pad", "1x"), ("duration_sec", "I"), ("duration_nsec", "I"), ("idle_timeout", "H"),
                              ("pad", "2x"), ("packet_count", "Q"), ("byte_count", "Q")],
    (OFP10, "port_status"): [("reason", "B"), ("pad", "7x"), ("desc", "struct:port10")],
    (OFP10, "packet_out"): [("buffer_id", "I"), ("in_port", "H"), ("actions_len", "len:actions"),
                            ("actions", "actions10"), ("data", "rest")],
    (OFP10, "flow_mod"): [("match", "match10"), ("cookie", "Q"), ("command", "H"), ("idle_timeout", "H"),
                          ("hard_timeout", "H"), ("priority", "H"), ("buffer_id", "I"), ("out_port", "H"),
                          ("flags", "H"), ("actions", "actions10")],
    (OFP10, "port_mod"): [("port_no", "H"), ("hw_addr", "mac"), ("config", "I"), ("mask", "I"), ("advertise", "I"),
                          ("pad", "4x")],
    (OFP10, "stats_request"): [("mp_type", "H"), ("flags", "H"), ("body", "mp10")],
    (OFP10, "stats_reply"): [("mp_type", "H"), ("flags", "H"), ("body", "mp10")],
    (OFP10, "barrier_request"): [],
    (OFP10, "barrier_reply"): [],
    # ---- OpenFlow 1.0 structures
    (OFP10, "port10"): [("port_no", "H"), ("hw_addr", "mac"), ("name", "str16"), ("config", "I"), ("state", "I"),
                        ("curr", "I"), ("advertised", "I"), ("supported", "I"), ("peer", "I")],
    (OFP10, "mp_desc_reply"): _DESC,
    (OFP10, "mp_flow_request"): [("match", "match10"), ("table_id", "B"), ("pad", "1x"), ("out_port", "H")],
    (OFP10, "flow_stats10"): [("length", "len:*"), ("table_id", "B"), ("pad", "1x"), ("match", "match10"),
                              ("duration_sec", "I"), ("duration_nsec", "I"), ("priority", "H"),
                              ("idle_timeout", "H"), ("hard_timeout", "H"), ("pad", "6x"), ("cookie", "Q"),
                              ("packet_count", "Q"), ("byte_count", "Q"), ("actions", "actions10")],
    (OFP10, "mp_aggregate_reply"): [("packet_count", "Q"), ("byte_count", "Q"), ("flow_count", "I"), ("pad", "4x")],
    (OFP10, "table_stats10"): [("table_id", "B"), ("pad", "3x"), ("name", "str32"), ("wildcards", "I"),
                               ("max_entries", "I"), ("active_count", "I"), ("lookup_count", "Q"),
                               ("matched_count", "Q")],
    (OFP10, "mp_port_stats_request"): [("port_no", "H"), ("pad", "6x")],
    (OFP10, "port_stats10"): [("port_no", "H"), ("pad", "6x"), *_PORT_STATS],
}

# ---- OpenFlow 1.4 and 1.5: 1.3's layouts, then what differs
_FLOW_FIXED14 = [*_FLOW_FIXED13[:-1], ("importance", "H")]
#: OpenFlow 1.4+ port: the Ethernet property (type 0, 32 bytes) first, then any others
_PORT14 = [("port_no", "I"), ("length", "len:*"), ("pad", "2x"), ("hw_addr", "mac"), ("pad", "2x"), ("name", "str16"),
           ("config", "I"), ("state", "I"), ("eth_prop_type", "H"), ("eth_prop_len", "H"), ("pad", "4x"),
           ("curr", "I"), ("advertised", "I"), ("supported", "I"), ("peer", "I"), ("curr_speed", "I"),
           ("max_speed", "I"), ("properties", "rest")]
_PORT_STATS14 = [("length", "len:*"), ("pad", "2x"), ("port_no", "I"), ("duration_sec", "I"), ("duration_nsec", "I"),
                 *_PORT_STATS[:8], ("eth_prop_type", "H"), ("eth_prop_len", "H"), ("pad", "4x"),
                 *_PORT_STATS[8:], ("properties", "rest")]
_FLOW_STATS14 = [(n, k) for n, k in LAYOUTS[(OFP13, "flow_stats13")] if (n, k) != ("pad", "4x")]
_FLOW_STATS14.insert(_FLOW_STATS14.index(("flags", "H")) + 1, ("importance", "H"))
_FLOW_STATS14.insert(_FLOW_STATS14.index(("importance", "H")) + 1, ("pad", "2x"))
_DIFF14: dict[str, list[tuple[str, str]]] = {
    "flow_mod": [*_FLOW_FIXED14, ("match", "match13"), ("instructions", "instructions")],
    "port_status": [("reason", "B"), ("pad", "7x"), ("desc", "struct:port14")],
    "port_mod": [("port_no", "I"), ("pad", "4x"), ("hw_addr", "mac"), ("pad", "2x"), ("config", "I"), ("mask", "I"),
                 ("properties", "rest")],
    "get_async_reply": [("properties", "props:async_prop")],
    "set_async": [("properties", "props:async_prop")],
    "role_status": [("role", "I"), ("reason", "B"), ("pad", "3x"), ("generation_id", "Q"), ("properties", "rest")],
    "bundle_control": [("bundle_id", "I"), ("ctrl_type", "H"), ("flags", "H"), ("properties", "rest")],
    "bundle_add_message": [("bundle_id", "I"), ("pad", "2x"), ("flags", "H"), ("message", "rest")],
    "port14": _PORT14,
    "port_stats14": _PORT_STATS14,
    "flow_stats14": _FLOW_STATS14,
    "async_prop": [("prop_type", "H"), ("length", "len:*"), ("mask", "I")],
    "mp_meter_features_reply": [("max_meter", "I"), ("band_types", "I"), ("capabilities", "I"), ("max_bands", "B"),
                                ("max_color", "B"), ("pad", "2x")],
}
_DIFF15: dict[str, list[tuple[str, str]]] = {
    "packet_out": [("buffer_id", "I"), ("actions_len", "len:actions"), ("pad", "2x"), ("match", "match13"),
                   ("actions", "actions13"), ("data", "rest")],
    "flow_desc15": [("length", "len:*"), ("pad", "2x"), ("table_id", "B"), ("pad", "1x"), ("priority", "H"),
                    ("idle_timeout", "H"), ("hard_timeout", "H"), ("flags", "H"), ("importance", "H"),
                    ("cookie", "Q"), ("match", "match13"), ("stats", "oxs"), ("instructions", "instructions")],
    "mp_aggregate_reply": [("stats", "oxs")],
    "flow_removed": [("table_id", "B"), ("reason", "B"), ("priority", "H"), ("idle_timeout", "H"),
                     ("hard_timeout", "H"), ("cookie", "Q"), ("match", "match13"), ("stats", "oxs")],
    "table_features13": [("length", "len:*"), ("table_id", "B"), ("command", "B"), ("features", "I"),
                         ("name", "str32"), ("metadata_match", "Q"), ("metadata_write", "Q"), ("config", "I"),
                         ("max_entries", "I"), ("properties", "rest")],
}
for _name, _layout in [(n, lay) for (v, n), lay in LAYOUTS.items() if v == OFP13]:
    LAYOUTS[(OFP14, _name)] = LAYOUTS[(OFP15, _name)] = _layout
for _name, _layout in _DIFF14.items():
    LAYOUTS[(OFP14, _name)] = LAYOUTS[(OFP15, _name)] = _layout
LAYOUTS.update({(OFP15, n): lay for n, lay in _DIFF15.items()})
LAYOUTS[(OFP13, "mp_meter_features_reply")] = _DIFF14["mp_meter_features_reply"]
# the ONF bundle extension of OpenFlow 1.3: 1.4's bundle bodies inside experimenter messages
LAYOUTS[(OFP13, "bundle_control")] = _DIFF14["bundle_control"]
LAYOUTS[(OFP13, "bundle_add_message")] = _DIFF14["bundle_add_message"]

# multipart (1.3) / stats (1.0) bodies: type -> (request layout, reply layout); "list:" = repeated structures
MP_DESC, MP_FLOW, MP_AGGREGATE, MP_TABLE, MP_PORT_STATS, MP_TABLE_FEATURES, MP_PORT_DESC = 0, 1, 2, 3, 4, 12, 13
MP_METER_FEATURES = 11
MULTIPART = {
    OFP13: {MP_DESC: ("", "struct:mp_desc_reply"), MP_FLOW: ("struct:mp_flow_request", "list:flow_stats13"),
            MP_AGGREGATE: ("struct:mp_flow_request", "struct:mp_aggregate_reply"),
            MP_TABLE: ("", "list:table_stats13"), MP_PORT_STATS: ("struct:mp_port_stats_request", "list:port_stats13"),
            MP_TABLE_FEATURES: ("", "list:table_features13"), MP_PORT_DESC: ("", "list:port13"),
            MP_METER_FEATURES: ("", "struct:mp_meter_features_reply")},
    OFP10: {MP_DESC: ("", "struct:mp_desc_reply"), MP_FLOW: ("struct:mp_flow_request", "list:flow_stats10"),
            MP_AGGREGATE: ("struct:mp_flow_request", "struct:mp_aggregate_reply"),
            MP_TABLE: ("", "list:table_stats10"), MP_PORT_STATS: ("struct:mp_port_stats_request", "list:port_stats10"),
            MP_PORT_DESC: ("", "list:port10")},   # OVS's extension: port descriptions in OpenFlow 1.0
}
MULTIPART[OFP14] = {**MULTIPART[OFP13], MP_FLOW: ("struct:mp_flow_request", "list:flow_stats14"),
                    MP_PORT_STATS: ("struct:mp_port_stats_request", "list:port_stats14"),
                    MP_PORT_DESC: ("", "list:port14")}
MULTIPART[OFP15] = {**MULTIPART[OFP14], MP_FLOW: ("struct:mp_flow_request", "list:flow_desc15"),
                    MP_PORT_DESC: ("struct:mp_port_stats_request", "list:port14")}   # 1.5: one port, or ANY
# ---- groups and meters (OpenFlow 1.3+; 1.5 numbers buckets and gives them and the group properties)
MP_GROUP, MP_GROUP_DESC, MP_GROUP_FEATURES, MP_METER, MP_METER_CONFIG = 6, 7, 8, 9, 10
_COUNTER = [("packet_count", "Q"), ("byte_count", "Q")]
_METER_BAND = [("type", "H"), ("length", "len:*"), ("rate", "I"), ("burst_size", "I"), ("prec_level", "B"),
               ("pad", "3x")]
_GROUP_STATS = [("length", "len:*"), ("pad", "2x"), ("group_id", "I"), ("ref_count", "I"), ("pad", "4x"),
                ("packet_count", "Q"), ("byte_count", "Q"), ("duration_sec", "I"), ("duration_nsec", "I"),
                ("bucket_stats", "list:counter")]
_GROUP_FEATURES = [("types", "I"), ("capabilities", "I"), *[(f"max_groups_{t}", "I") for t in range(4)],
                   *[(f"actions_{t}", "I") for t in range(4)]]
_GROUP_MP_REQUEST = [("group_id", "I"), ("pad", "4x")]
_METER_MP_REQUEST = [("meter_id", "I"), ("pad", "4x")]
_GROUPS_METERS: dict[str, list[tuple[str, str]]] = {
    "group_mod": [("command", "H"), ("type", "B"), ("pad", "1x"), ("group_id", "I"), ("buckets", "list:bucket")],
    "bucket": [("length", "len:*"), ("weight", "H"), ("watch_port", "I"), ("watch_group", "I"), ("pad", "4x"),
               ("actions", "actions13")],
    "group_desc": [("length", "len:*"), ("type", "B"), ("pad", "1x"), ("group_id", "I"), ("buckets", "list:bucket")],
    "group_stats": _GROUP_STATS,
    "counter": _COUNTER,
    "mp_group_request": _GROUP_MP_REQUEST,
    "mp_group_features_reply": _GROUP_FEATURES,
    "meter_mod": [("command", "H"), ("flags", "H"), ("meter_id", "I"), ("bands", "list:meter_band")],
    "meter_band": _METER_BAND,
    "meter_config": [("length", "len:*"), ("flags", "H"), ("meter_id", "I"), ("bands", "list:meter_band")],
    "meter_stats": [("meter_id", "I"), ("length", "len:*"), ("pad", "6x"), ("flow_count", "I"),
                    ("packet_in_count", "Q"), ("byte_in_count", "Q"), ("duration_sec", "I"), ("duration_nsec", "I"),
                    ("band_stats", "list:counter")],
    "mp_meter_request": _METER_MP_REQUEST,
}
_GROUPS15: dict[str, list[tuple[str, str]]] = {
    "group_mod": [("command", "H"), ("type", "B"), ("pad", "1x"), ("group_id", "I"), ("bucket_array_len",
                  "len:buckets"), ("pad", "2x"), ("command_bucket_id", "I"), ("buckets", "list:bucket"),
                  ("properties", "props:prop")],
    "bucket": [("length", "len:*"), ("action_array_len", "len:actions"), ("bucket_id", "I"), ("actions", "actions13"),
               ("properties", "props:prop")],
    "group_desc": [("length", "len:*"), ("type", "B"), ("pad", "1x"), ("group_id", "I"),
                   ("bucket_list_len", "len:buckets"), ("pad", "6x"), ("buckets", "list:bucket"),
                   ("properties", "props:prop")],
    #: a 1.4+ property kept as its bytes (bucket weight / watch, OVS's group selection method)
    "prop": [("prop_type", "H"), ("length", "len:*"), ("body", "rest")],
}
for _v in (OFP13, OFP14, OFP15):
    LAYOUTS.update({(_v, n): lay for n, lay in _GROUPS_METERS.items()})
LAYOUTS.update({(OFP15, n): lay for n, lay in _GROUPS15.items()})
#: OpenFlow 1.0 has groups through OVS's Nicira messages (NXT_GROUP_MOD, NXST_GROUP / _DESC / _FEATURES:
#: ``vswitch.openflow.nxt``): 1.5's group-mod and description with 1.0 actions, 1.3's statistics and features
LAYOUTS.update({(OFP10, n): lay for n, lay in {
    **_GROUPS15, "group_stats": _GROUP_STATS, "counter": _COUNTER, "mp_group_request": _GROUP_MP_REQUEST,
    "mp_group_features_reply": _GROUP_FEATURES}.items()})
for _v in (OFP13, OFP14, OFP15):
    MULTIPART[_v].update({
        MP_GROUP: ("struct:mp_group_request", "list:group_stats"),
        MP_GROUP_DESC: ("struct:mp_group_request" if _v == OFP15 else "", "list:group_desc"),
        MP_GROUP_FEATURES: ("", "struct:mp_group_features_reply"),
        MP_METER: ("struct:mp_meter_request", "list:meter_stats"),
        MP_METER_CONFIG: ("struct:mp_meter_request", "list:meter_config")})

#: queue statistics: the switch has no queues, so replies are empty lists (the request is what matters)
MP_QUEUE = 5
_QUEUE_STATS = [("tx_bytes", "Q"), ("tx_packets", "Q"), ("tx_errors", "Q")]
LAYOUTS.update({
    (OFP10, "mp_queue_request"): [("port_no", "H"), ("pad", "2x"), ("queue_id", "I")],
    (OFP10, "queue_stats"): [("port_no", "H"), ("pad", "2x"), ("queue_id", "I"), *_QUEUE_STATS],
    **{(_v, "mp_queue_request"): [("port_no", "I"), ("queue_id", "I")] for _v in (OFP13, OFP14, OFP15)},
    (OFP13, "queue_stats"): [("port_no", "I"), ("queue_id", "I"), *_QUEUE_STATS, ("duration_sec", "I"),
                             ("duration_nsec", "I")],
    **{(_v, "queue_stats"): [("length", "len:*"), ("pad", "6x"), ("port_no", "I"), ("queue_id", "I"), *_QUEUE_STATS,
                             ("duration_sec", "I"), ("duration_nsec", "I"), ("properties", "rest")]
       for _v in (OFP14, OFP15)}})
for _mp in MULTIPART.values():
    _mp[MP_QUEUE] = ("struct:mp_queue_request", "list:queue_stats")

#: OFPMP_EXPERIMENTER (1.0: OFPST_VENDOR): the body stays bytes (``vswitch.openflow.nxt``: Nicira's statistics)
MP_EXPERIMENTER = 0xFFFF
for _mp in MULTIPART.values():
    _mp[MP_EXPERIMENTER] = ("rest", "rest")
#: OFPMP_FLOW_MONITOR (1.4+): the body stays bytes too (``vswitch.openflow.monitor``)
MP_FLOW_MONITOR = 16
for _v in (OFP14, OFP15):
    MULTIPART[_v][MP_FLOW_MONITOR] = ("rest", "rest")
#: the 1.5 flow statistics (OXS, class 0x8002): name -> (field number, value bytes)
OXS_FIELDS = {"duration": (0, 8), "idle_time": (1, 8), "flow_count": (3, 4), "packet_count": (4, 8),
              "byte_count": (5, 8)}
OXS_BY_NUMBER = {num: (name, size) for name, (num, size) in OXS_FIELDS.items()}
OFPXSC_OPENFLOW_BASIC = 0x8002

# ---------------------------------------------------------------- OXM (OpenFlow 1.3 basic class)
OFPXMC_OPENFLOW_BASIC = 0x8000
#: name -> (field number, value bytes): every OpenFlow-basic field of the registry (``ofproto.fields``)
OXM_FIELDS = {f.oxm_name: (f.oxm[1], f.nbytes) for f in sorted(
    (f for f in _fields.FIELDS if f.oxm is not None and f.oxm[0] == OFPXMC_OPENFLOW_BASIC and f.oxm_name),
    key=lambda f: f.oxm[1])}
OXM_BY_NUMBER = {num: (name, size) for name, (num, size) in OXM_FIELDS.items()}


def _uint(b: bytes) -> int:
    return int.from_bytes(b, "big")


def _wire_field(name: str) -> _fields.Field:
    """The registry field a codec match key names (its OXM name, else its registry name)."""
    f = _fields.by_oxm_name(name) or _fields.by_name(name)
    if f is None:
        raise ValueError(f"no match field {name!r}")
    return f


def _oxm_encode(name: str, value: Any) -> bytes:
    if name == "nxm_in_port":    # Nicira's 16-bit in_port (OVS writes set_field of in_port with it)
        from vswitch.openflow import nxm
        return nxm.encode([(_fields.by_name("in_port"), value, None)], nxm.NXM)
    if name not in OXM_FIELDS:   # the NXM classes and experimenter OXMs (OVS takes them in any OXM match)
        from vswitch.openflow import nxm
        v, m = value if isinstance(value, tuple) else (value, None)
        return nxm.encode([(_wire_field(name), v, m)], nxm.OXM)
    num, size = OXM_FIELDS[name]
    if isinstance(value, tuple):
        v, m = value
        return struct.pack("!HBB", OFPXMC_OPENFLOW_BASIC, num << 1 | 1, 2 * size) + (v & m).to_bytes(size, "big") \
            + m.to_bytes(size, "big")
    return struct.pack("!HBB", OFPXMC_OPENFLOW_BASIC, num << 1, size) + value.to_bytes(size, "big")


def _oxm_decode(buf: bytes) -> tuple[str, Any, int]:
    """One OXM TLV at the start of ``buf``: ``(name, value or (value, mask), bytes used)``."""
    if len(buf) < 4:
        raise OfpError(OFPET_BAD_MATCH, OFPBMC_BAD_LEN, "truncated OXM header")
    cls, fh, length = struct.unpack_from("!HBB", buf)
    if len(buf) < 4 + length:
        raise OfpError(OFPET_BAD_MATCH, OFPBMC_BAD_LEN, "truncated OXM field")
    num, hasmask = fh >> 1, fh & 1
    if cls != OFPXMC_OPENFLOW_BASIC or num not in OXM_BY_NUMBER:
        return _nxm_decode_one(buf[:4 + length])
    name, size = OXM_BY_NUMBER[num]
    if length != size * (2 if hasmask else 1):
        raise OfpError(OFPET_BAD_MATCH, OFPBMC_BAD_LEN, f"OXM {name}: length {length}")
    body = buf[4:4 + length]
    value = (_uint(body[:size]), _uint(body[size:])) if hasmask else _uint(body)
    return name, value, 4 + length


def wire_name(f: _fields.Field) -> str:
    """The key a decoded match gives field ``f``: its OXM name, else its registry name."""
    return f.oxm_name or f.name


def match_entry(f: _fields.Field, value: int, mask: int | None) -> tuple[str, Any]:
    """A decoded NXM / OXM field as a match dict entry: ``(name, value or (value, mask))``, NXM's 16-bit
    in_port (OpenFlow 1.0's numbering) as OpenFlow 1.3's ``in_port``."""
    name = wire_name(f)
    if f.nxm == (_fields.OFPXMC_NXM_0, 0):   # NXM_OF_IN_PORT
        name, value = "in_port", value | 0xFFFF0000 if value >= 0xFF00 else value
    return name, value if mask is None else (value, mask)


def _nxm_decode_one(tlv: bytes) -> tuple[str, Any, int]:
    """One TLV of another class than OpenFlow basic (NXM_OF / NXM_NX, packet registers, experimenter)."""
    from vswitch.openflow import nxm
    ((f, value, mask),) = nxm.decode(tlv)
    return (*match_entry(f, value, mask), len(tlv))


def _oxm_order(name: str) -> tuple[int, int]:
    return (0, OXM_FIELDS[name][0]) if name in OXM_FIELDS else (1, 0)


def _pad8(n: int) -> int:
    return (n + 7) // 8 * 8


def match13_encode(match: dict[str, Any]) -> bytes:
    """``ofp_match`` (OFPMT_OXM) with its padding."""
    oxms = b"".join(_oxm_encode(k, match[k]) for k in sorted(match, key=_oxm_order))
    length = 4 + len(oxms)
    return struct.pack("!HH", 1, length) + oxms + bytes(_pad8(length) - length)


def match13_decode(buf: bytes) -> tuple[dict[str, Any], int]:
    """``(match, bytes used including padding)``."""
    if len(buf) < 4:
        raise OfpError(OFPET_BAD_MATCH, OFPBMC_BAD_LEN, "truncated match")
    mtype, length = struct.unpack_from("!HH", buf)
    if mtype != 1:
        raise OfpError(OFPET_BAD_MATCH, OFPBMC_BAD_TYPE, f"match type {mtype} (only OXM)")
    if length < 4 or len(buf) < _pad8(length):
        raise OfpError(OFPET_BAD_MATCH, OFPBMC_BAD_LEN, f"match length {length}")
    match: dict[str, Any] = {}
    off = 4
    while off < length:
        name, value, used = _oxm_decode(buf[off:length])
        if name in match:
            raise OfpError(OFPET_BAD_MATCH, OFPBMC_DUP_FIELD, f"{name} twice in the match")
        match[name] = value
        off += used
    return match, _pad8(length)


# ---------------------------------------------------------------- OpenFlow 1.0 match
OFPFW10 = {"in_port": 1 << 0, "dl_vlan": 1 << 1, "dl_src": 1 << 2, "dl_dst": 1 << 3, "dl_type": 1 << 4,
           "nw_proto": 1 << 5, "tp_src": 1 << 6, "tp_dst": 1 << 7, "dl_vlan_pcp": 1 << 20, "nw_tos": 1 << 21}
OFPFW10_NW_SRC_SHIFT, OFPFW10_NW_DST_SHIFT = 8, 14
OFPFW10_ALL = (1 << 22) - 1
_MATCH10 = struct.Struct("!IH6s6sHBxHBB2xIIHH")


def match10_encode(match: dict[str, Any]) -> bytes:
    """``ofp_match`` of OpenFlow 1.0: absent fields are wildcarded; ``nw_src``/``nw_dst`` may be ``(addr, prefix)``."""
    wc = OFPFW10_ALL
    for name, bit in OFPFW10.items():
        if name in match:
            wc &= ~bit
    nw = {}
    for name, shift in (("nw_src", OFPFW10_NW_SRC_SHIFT), ("nw_dst", OFPFW10_NW_DST_SHIFT)):
        wc &= ~(0x3F << shift)
        if name in match:
            addr, plen = match[name] if isinstance(match[name], tuple) else (match[name], 32)
            wc |= (32 - plen) << shift
            nw[name] = addr
        else:
            wc |= 32 << shift
    m = match
    return _MATCH10.pack(wc, m.get("in_port", 0), m.get("dl_src", 0).to_bytes(6, "big"),
                         m.get("dl_dst", 0).to_bytes(6, "big"), m.get("dl_vlan", 0), m.get("dl_vlan_pcp", 0),
                         m.get("dl_type", 0), m.get("nw_tos", 0), m.get("nw_proto", 0), nw.get("nw_src", 0),
                         nw.get("nw_dst", 0), m.get("tp_src", 0), m.get("tp_dst", 0))


def match10_decode(buf: bytes) -> tuple[dict[str, Any], int]:
    """The fields not wildcarded (``nw_src``/``nw_dst`` as ``(addr, prefix)`` unless /32)."""
    if len(buf) < _MATCH10.size:
        raise OfpError(OFPET_BAD_REQUEST, OFPBRC_BAD_LEN, "truncated OpenFlow 1.0 match")
    (wc, in_port, dl_src, dl_dst, dl_vlan, pcp, dl_type, tos, proto, nw_src, nw_dst, tp_src,
     tp_dst) = _MATCH10.unpack_from(buf)
    values = {"in_port": in_port, "dl_src": _uint(dl_src), "dl_dst": _uint(dl_dst), "dl_vlan": dl_vlan,
              "dl_vlan_pcp": pcp, "dl_type": dl_type, "nw_tos": tos, "nw_proto": proto, "tp_src": tp_src,
              "tp_dst": tp_dst}
    match = {name: values[name] for name, bit in OFPFW10.items() if not wc & bit}
    for name, shift, addr in (("nw_src", OFPFW10_NW_SRC_SHIFT, nw_src), ("nw_dst", OFPFW10_NW_DST_SHIFT, nw_dst)):
        wild = min((wc >> shift) & 0x3F, 32)
        if wild < 32:
            match[name] = addr if wild == 0 else (addr, 32 - wild)
    return match, _MATCH10.size


# ---------------------------------------------------------------- actions
#: (version, name) -> (type number, layout after the 4-byte type/length header, fixed length or 0 if variable)
ACTIONS = {
    (OFP13, "output"): (0, [("port", "I"), ("max_len", "H"), ("pad", "6x")]),
    (OFP13, "push_vlan"): (17, [("ethertype", "H"), ("pad", "2x")]),
    (OFP13, "pop_vlan"): (18, [("pad", "4x")]),
    (OFP13, "set_queue"): (21, [("queue_id", "I")]),
    (OFP13, "group"): (22, [("group_id", "I")]),
    (OFP13, "dec_nw_ttl"): (24, [("pad", "4x")]),
    (OFP13, "set_field"): (25, [("field", "oxm")]),
    (OFP10, "output"): (0, [("port", "H"), ("max_len", "H")]),
    (OFP10, "set_vlan_vid"): (1, [("vlan_vid", "H"), ("pad", "2x")]),
    (OFP10, "set_vlan_pcp"): (2, [("vlan_pcp", "B"), ("pad", "3x")]),
    (OFP10, "strip_vlan"): (3, [("pad", "4x")]),
    (OFP10, "set_dl_src"): (4, [("dl_addr", "mac"), ("pad", "6x")]),
    (OFP10, "set_dl_dst"): (5, [("dl_addr", "mac"), ("pad", "6x")]),
    (OFP10, "set_nw_src"): (6, [("nw_addr", "I")]),
    (OFP10, "set_nw_dst"): (7, [("nw_addr", "I")]),
    (OFP10, "set_nw_tos"): (8, [("nw_tos", "B"), ("pad", "3x")]),
    (OFP10, "set_tp_src"): (9, [("tp_port", "H"), ("pad", "2x")]),
    (OFP10, "set_tp_dst"): (10, [("tp_port", "H"), ("pad", "2x")]),
    (OFP10, "enqueue"): (11, [("port", "H"), ("pad", "6x"), ("queue_id", "I")]),
}
ACTIONS.update({(v, name): spec for (v13, name), spec in list(ACTIONS.items()) if v13 == OFP13 for v in (OFP14, OFP15)})
ACTION_BY_NUMBER = {(v, num): name for (v, name), (num, _) in ACTIONS.items()}
#: OpenFlow 1.5's meter action (1.3 / 1.4 flows carry the meter instruction; the instructions are decoded with
#: 1.3's action numbers, so it is known there too)
ACTIONS.update({(v, "meter"): (29, [("meter_id", "I")]) for v in (OFP13, OFP14, OFP15)})
ACTION_BY_NUMBER.update({(v, 29): "meter" for v in (OFP13, OFP14, OFP15)})

INSTRUCTIONS = {"goto_table": 1, "write_metadata": 2, "write_actions": 3, "apply_actions": 4, "clear_actions": 5,
                "meter": 6}
INSTRUCTION_BY_NUMBER = {v: k for k, v in INSTRUCTIONS.items()}


OFPAT_COPY_FIELD = 28   # OpenFlow 1.5: n_bits, src_offset, dst_offset, pad 2, then the source and destination
_COPY_FIELD = struct.Struct("!HHHHH2x")   # OXM headers (4 bytes, 8 for an experimenter OXM), padded to 8


def _copy_field_encode(a: dict[str, Any]) -> bytes:
    from vswitch.openflow import nicira, nxm
    heads = nicira.field_header(a["src"], nxm.OXM) + nicira.field_header(a["dst"], nxm.OXM)
    length = _pad8(_COPY_FIELD.size + len(heads))
    return _COPY_FIELD.pack(OFPAT_COPY_FIELD, length, a["n_bits"], a["src_ofs"], a["dst_ofs"]) + heads \
        + bytes(length - _COPY_FIELD.size - len(heads))


def _copy_field_decode(buf: bytes) -> dict[str, Any]:
    """OpenFlow 1.5's copy_field as ``{"type": "copy_field", n_bits, src_ofs, dst_ofs, src, dst}``."""
    from vswitch.openflow import nicira
    if len(buf) < 20:
        raise OfpError(OFPET_BAD_ACTION, OFPBAC_BAD_LEN, f"copy_field of {len(buf)} bytes")
    _t, _l, n_bits, src_ofs, dst_ofs = struct.unpack_from("!HHHHH", buf)
    src, used = nicira._header_field(buf, 12)
    dst, used2 = nicira._header_field(buf, 12 + used)
    if any(buf[12 + used + used2:]):
        raise OfpError(OFPET_BAD_ACTION, OFPBAC_BAD_LEN, "copy_field: non-zero bytes after its fields")
    return {"type": "copy_field", "n_bits": n_bits, "src_ofs": src_ofs, "dst_ofs": dst_ofs, "src": src, "dst": dst}


def actions_encode(version: int, actions: list[dict[str, Any]]) -> bytes:
    """A list of actions."""
    out = []
    for action in actions:
        kind = action["type"]
        if kind.startswith("nx_"):   # a Nicira extension action (OFPAT_EXPERIMENTER / OFPAT_VENDOR)
            from vswitch.openflow import nicira
            out.append(nicira.encode_action(action, lambda acts: actions_encode(version, acts)))
            continue
        if kind == "copy_field" and version >= OFP15:
            out.append(_copy_field_encode(action))
            continue
        if (version, kind) not in ACTIONS:
            raise ValueError(f"action {kind!r} does not exist in OpenFlow version 0x{version:02x}")
        num, layout = ACTIONS[(version, kind)]
        if kind == "set_field":
            (name, value), = action["field"].items()
            body = _oxm_encode(name, value)
            length = _pad8(4 + len(body))
            out.append(struct.pack("!HH", num, length) + body + bytes(length - 4 - len(body)))
            continue
        body = _encode_fields(version, layout, action)
        out.append(struct.pack("!HH", num, 4 + len(body)) + body)
    return b"".join(out)


def actions_decode(version: int, buf: bytes) -> list[dict[str, Any]]:
    """Every action in ``buf``."""
    actions = []
    off = 0
    while off < len(buf):
        if len(buf) - off < 4:
            raise OfpError(OFPET_BAD_ACTION, OFPBAC_BAD_LEN, "truncated action header")
        num, length = struct.unpack_from("!HH", buf, off)
        if length < 8 or length % 8 or off + length > len(buf):
            raise OfpError(OFPET_BAD_ACTION, OFPBAC_BAD_LEN, f"action length {length}")
        if num == OFPAT_EXPERIMENTER:
            from vswitch.openflow import nicira
            actions.append(nicira.decode_action(buf[off:off + length], lambda b: actions_decode(version, b)))
            off += length
            continue
        if num == OFPAT_COPY_FIELD and version >= OFP15:
            actions.append(_copy_field_decode(buf[off:off + length]))
            off += length
            continue
        name = ACTION_BY_NUMBER.get((version, num))
        if name is None:
            raise OfpError(OFPET_BAD_ACTION, OFPBAC_BAD_TYPE, f"action type {num}")
        body = buf[off + 4:off + length]
        if name == "set_field":
            fname, value, _ = _oxm_decode(body)
            action: dict[str, Any] = {"type": name, "field": {fname: value}}
        else:
            action = {"type": name, **_decode_fields(version, ACTIONS[(version, name)][1], body, exact=True)}
        actions.append(action)
        off += length
    return actions


def instructions_encode(instructions: list[dict[str, Any]], version: int = OFP13) -> bytes:
    """OpenFlow 1.1+ instructions (their actions as ``version`` writes them)."""
    out = []
    for ins in instructions:
        kind = ins["type"]
        num = INSTRUCTIONS[kind]
        if kind == "goto_table":
            out.append(struct.pack("!HHB3x", num, 8, ins["table_id"]))
        elif kind == "write_metadata":
            out.append(struct.pack("!HH4xQQ", num, 24, ins["metadata"], ins["metadata_mask"]))
        elif kind in ("write_actions", "apply_actions", "clear_actions"):
            acts = actions_encode(version, ins.get("actions", []))
            out.append(struct.pack("!HH4x", num, 8 + len(acts)) + acts)
        elif kind == "meter":
            out.append(struct.pack("!HHI", num, 8, ins["meter_id"]))
    return b"".join(out)


def instructions_decode(buf: bytes, version: int = OFP13) -> list[dict[str, Any]]:
    """Every instruction in ``buf`` (their actions as ``version`` reads them)."""
    out: list[dict[str, Any]] = []
    off = 0
    while off < len(buf):
        if len(buf) - off < 4:
            raise OfpError(OFPET_BAD_INSTRUCTION, OFPBIC_BAD_LEN, "truncated instruction")
        num, length = struct.unpack_from("!HH", buf, off)
        if length < 8 or length % 8 or off + length > len(buf):
            raise OfpError(OFPET_BAD_INSTRUCTION, OFPBIC_BAD_LEN, f"instruction length {length}")
        kind = INSTRUCTION_BY_NUMBER.get(num)
        if kind is None:
            raise OfpError(OFPET_BAD_INSTRUCTION, OFPBIC_UNKNOWN_INST, f"instruction type {num}")
        body = buf[off:off + length]
        if kind == "goto_table":
            out.append({"type": kind, "table_id": body[4]})
        elif kind == "write_metadata":
            if length != 24:
                raise OfpError(OFPET_BAD_INSTRUCTION, OFPBIC_BAD_LEN, "write_metadata length")
            md, mask = struct.unpack_from("!QQ", body, 8)
            out.append({"type": kind, "metadata": md, "metadata_mask": mask})
        elif kind == "meter":
            out.append({"type": kind, "meter_id": struct.unpack_from("!I", body, 4)[0]})
        else:
            out.append({"type": kind, "actions": actions_decode(version, body[8:])})
        off += length
    return out


# ---------------------------------------------------------------- generic layout walker
def _encode_fields(version: int, layout: list[tuple[str, str]], values: dict[str, Any]) -> bytes:
    parts: list[bytes] = []
    fixups: list[tuple[int, str, str]] = []   # (part index, length field's target, struct code)
    for name, kind in layout:
        if kind.endswith("x") and kind[:-1].isdigit():
            parts.append(bytes(int(kind[:-1])))
        elif kind in ("B", "H", "I", "Q"):
            parts.append(struct.pack("!" + kind, values.get(name, 0)))
        elif kind == "mac":
            parts.append(values.get(name, 0).to_bytes(6, "big"))
        elif kind.startswith("str") and kind[3:].isdigit():
            size = int(kind[3:])
            parts.append(values.get(name, "").encode()[:size - 1].ljust(size, b"\0"))
        elif kind.startswith("len:"):
            fixups.append((len(parts), kind[4:], "H"))
            parts.append(b"\0\0")
        elif kind == "rest":
            parts.append(bytes(values.get(name, b"")))
        elif kind == "match13":
            parts.append(match13_encode(values.get(name, {})))
        elif kind == "match10":
            parts.append(match10_encode(values.get(name, {})))
        elif kind in ("actions13", "actions10"):
            parts.append(actions_encode(version, values.get(name, [])))
        elif kind == "instructions":
            parts.append(instructions_encode(values.get(name, []), version))
        elif kind == "oxm":
            (fname, fvalue), = values[name].items()
            parts.append(_oxm_encode(fname, fvalue))
        elif kind == "hello_elements":
            parts.append(_hello_elements_encode(values.get(name, [])))
        elif kind == "oxs":
            parts.append(oxs_encode(values.get(name, {})))
        elif kind.startswith("props:"):
            parts.append(b"".join(_pad_to8(_encode_fields(version, LAYOUTS[(version, kind[6:])], item))
                                  for item in values.get(name, [])))
        elif kind.startswith("struct:"):
            parts.append(_encode_fields(version, LAYOUTS[(version, kind[7:])], values.get(name, {})))
        elif kind.startswith("list:"):
            parts.append(b"".join(_encode_fields(version, LAYOUTS[(version, kind[5:])], item)
                                  for item in values.get(name, [])))
        elif kind in ("mp13", "mp10"):
            parts.append(_mp_encode(version, values))
        else:
            raise ValueError(f"unknown layout kind {kind!r}")
    for index, target, _code in fixups:
        if target == "*":
            size = sum(len(p) for p in parts)
        else:
            size = len(parts[[n for n, _ in layout].index(target)])   # one part per layout entry
        parts[index] = struct.pack("!H", size)
    return b"".join(parts)


_STEPS: dict[int, tuple[list[tuple[str, str]], list[tuple[Any, ...]]]] = {}


def _steps(layout: list[tuple[str, str]]) -> list[tuple[Any, ...]]:
    """The layout as decoding steps: runs of fixed-size integers and pads become one ``struct.Struct``
    (``("fixed", struct, ((name, length key or None), ...))``), everything else ``("var", name, kind)``."""
    hit = _STEPS.get(id(layout))
    if hit is not None and hit[0] is layout:
        return hit[1]
    steps: list[tuple[Any, ...]] = []
    fmt = ""
    names: list[tuple[str, str | None]] = []
    for name, kind in layout:
        if kind.endswith("x") and kind[:-1].isdigit():
            fmt += kind
        elif kind in ("B", "H", "I", "Q"):
            fmt += kind
            names.append((name, None))
        elif kind.startswith("len:"):
            fmt += "H"
            names.append((name, kind[4:]))
        else:
            if fmt:
                steps.append(("fixed", struct.Struct("!" + fmt), tuple(names)))
                fmt, names = "", []
            steps.append(("var", name, kind))
    if fmt:
        steps.append(("fixed", struct.Struct("!" + fmt), tuple(names)))
    _STEPS[id(layout)] = (layout, steps)
    return steps


def _decode_fields(version: int, layout: list[tuple[str, str]], buf: bytes, exact: bool = False,
                   ctx: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    off = 0
    lengths: dict[str, int] = {}
    for step in _steps(layout):
        if step[0] == "fixed":
            st = step[1]
            if off + st.size > len(buf):
                raise OfpError(OFPET_BAD_REQUEST, OFPBRC_BAD_LEN,
                               f"message too short for {', '.join(n for n, _ in step[2]) or 'padding'}")
            for (name, length_of), value in zip(step[2], st.unpack_from(buf, off), strict=True):
                if length_of is None:
                    out[name] = value
                else:
                    lengths[length_of] = value
                    if length_of == "*":
                        out[name] = value
            off += st.size
            continue
        _, name, kind = step
        if kind == "mac":
            if off + 6 > len(buf):
                raise OfpError(OFPET_BAD_REQUEST, OFPBRC_BAD_LEN, f"message too short for {name}")
            out[name] = _uint(buf[off:off + 6])
            off += 6
        elif kind.startswith("str") and kind[3:].isdigit():
            size = int(kind[3:])
            if off + size > len(buf):
                raise OfpError(OFPET_BAD_REQUEST, OFPBRC_BAD_LEN, f"message too short for {name}")
            out[name] = buf[off:off + size].split(b"\0", 1)[0].decode(errors="replace")
            off += size
        elif kind == "rest":
            out[name] = bytes(buf[off:])
            off = len(buf)
        elif kind == "match13":
            out[name], used = match13_decode(buf[off:])
            off += used
        elif kind == "match10":
            out[name], used = match10_decode(buf[off:])
            off += used
        elif kind in ("actions13", "actions10"):
            end = off + lengths[name] if name in lengths else len(buf)
            if end > len(buf):
                raise OfpError(OFPET_BAD_REQUEST, OFPBRC_BAD_LEN, "actions longer than the message")
            out[name] = actions_decode(version, buf[off:end])
            off = end
        elif kind == "instructions":
            out[name] = instructions_decode(buf[off:], version)
            off = len(buf)
        elif kind == "oxm":
            fname, value, used = _oxm_decode(buf[off:])
            out[name] = {fname: value}
            off += used
        elif kind == "hello_elements":
            out[name] = _hello_elements_decode(buf[off:])
            off = len(buf)
        elif kind == "oxs":
            out[name], used = oxs_decode(buf[off:])
            off += used
        elif kind.startswith("props:"):
            end = off + lengths[name] if name in lengths else len(buf)
            out[name] = _list_decode(version, kind[6:], buf[off:end], padded=True)
            off = end
        elif kind.startswith("struct:"):
            sub = LAYOUTS[(version, kind[7:])]
            size = _fixed_size(sub)
            if size is None:            # ends with something variable: it takes the rest
                size = len(buf) - off
            if off + size > len(buf):
                raise OfpError(OFPET_BAD_REQUEST, OFPBRC_BAD_LEN, f"message too short for {name}")
            out[name] = _decode_fields(version, sub, buf[off:off + size])
            off += size
        elif kind.startswith("list:"):
            end = off + lengths[name] if name in lengths else len(buf)
            if end > len(buf):
                raise OfpError(OFPET_BAD_REQUEST, OFPBRC_BAD_LEN, f"{name} longer than the message")
            out[name] = _list_decode(version, kind[5:], buf[off:end])
            off = end
        elif kind in ("mp13", "mp10"):
            out[name] = _mp_decode(version, ctx or out, buf[off:])
            off = len(buf)
        else:
            raise ValueError(f"unknown layout kind {kind!r}")
    if exact and off != len(buf):
        raise OfpError(OFPET_BAD_REQUEST, OFPBRC_BAD_LEN, f"{len(buf) - off} unexpected trailing bytes")
    return out


def _fixed_size(layout: list[tuple[str, str]]) -> int | None:
    """Bytes of a layout made of fixed-size fields only, None when something in it is variable."""
    size = 0
    for _name, kind in layout:
        if kind == "mac":
            size += 6
        elif kind == "match10":
            size += _MATCH10.size
        elif kind.startswith("str") and kind[3:].isdigit():
            size += int(kind[3:])
        elif kind.startswith("len:"):
            size += 2
        elif kind in ("B", "H", "I", "Q") or (kind.endswith("x") and kind[:-1].isdigit()):
            size += struct.calcsize("!" + kind)
        else:
            return None
    return size


def _length_at(layout: list[tuple[str, str]]) -> int | None:
    """Where a self-sized structure keeps its length (its ``len:*`` field), None when it has none."""
    for i, (_name, kind) in enumerate(layout):
        if kind == "len:*":
            return _fixed_size(layout[:i])
    return None


def _pad_to8(b: bytes) -> bytes:
    return b + bytes(_pad8(len(b)) - len(b))


def _list_decode(version: int, item: str, buf: bytes, padded: bool = False) -> list[dict[str, Any]]:
    """Structures to the end of ``buf``; ``padded``: each is padded to 8 bytes beyond its length (properties)."""
    layout = LAYOUTS[(version, item)]
    items = []
    off = 0
    at = _length_at(layout)
    while off < len(buf):
        if at is not None:
            if len(buf) - off < at + 2:
                raise OfpError(OFPET_BAD_REQUEST, OFPBRC_BAD_LEN, f"truncated {item}")
            size = struct.unpack_from("!H", buf, off + at)[0]
        else:
            size = _fixed_size(layout) or 0
        if size <= 0 or off + size > len(buf):
            raise OfpError(OFPET_BAD_REQUEST, OFPBRC_BAD_LEN, f"{item} of {size} bytes")
        entry = _decode_fields(version, layout, buf[off:off + size])
        entry.pop("length", None)
        items.append(entry)
        off += _pad8(size) if padded else size
    return items


def oxs_encode(stats: dict[str, int]) -> bytes:
    """``ofp_stats`` (OpenFlow 1.5): OXS TLVs for the statistics given, in OVS's order, padded to 8 bytes."""
    body = b""
    for name in ("duration", "idle_time", "packet_count", "byte_count", "flow_count"):
        if name in stats:
            num, size = OXS_FIELDS[name]
            body += struct.pack("!HBB", OFPXSC_OPENFLOW_BASIC, num << 1, size) + stats[name].to_bytes(size, "big")
    return _pad_to8(struct.pack("!HH", 0, 4 + len(body)) + body)


def oxs_decode(buf: bytes) -> tuple[dict[str, int], int]:
    """``(statistics by name, bytes used including padding)`` of an ``ofp_stats``."""
    if len(buf) < 4:
        raise OfpError(OFPET_BAD_REQUEST, OFPBRC_BAD_LEN, "truncated OXS statistics")
    length = struct.unpack_from("!H", buf, 2)[0]
    if length < 4 or len(buf) < _pad8(length):
        raise OfpError(OFPET_BAD_REQUEST, OFPBRC_BAD_LEN, f"OXS length {length}")
    out: dict[str, int] = {}
    off = 4
    while off < length:
        if length - off < 4:
            raise OfpError(OFPET_BAD_REQUEST, OFPBRC_BAD_LEN, "truncated OXS field")
        cls, fh, size = struct.unpack_from("!HBB", buf, off)
        if off + 4 + size > length:
            raise OfpError(OFPET_BAD_REQUEST, OFPBRC_BAD_LEN, "truncated OXS field")
        known = OXS_BY_NUMBER.get(fh >> 1)
        if cls == OFPXSC_OPENFLOW_BASIC and known is not None and known[1] == size:
            out[known[0]] = _uint(buf[off + 4:off + 4 + size])
        off += 4 + size
    return out, _pad8(length)


def _mp_encode(version: int, values: dict[str, Any]) -> bytes:
    kinds = MULTIPART[version].get(values["mp_type"])
    if kinds is None:
        return bytes(values.get("body", b""))
    kind = kinds[1] if values.get("_reply") else kinds[0]
    if not kind:
        return b""
    sub = {"body": values.get("body", {} if kind.startswith("struct:") else [])}
    return _encode_fields(version, [("body", kind)], sub)


def _mp_decode(version: int, head: dict[str, Any], buf: bytes) -> Any:
    kinds = MULTIPART[version].get(head["mp_type"])
    if kinds is None:
        raise OfpError(OFPET_BAD_REQUEST, OFPBRC_BAD_MULTIPART, f"multipart type {head['mp_type']}")
    kind = kinds[1] if head.get("_reply") else kinds[0]
    if not kind:
        return {}
    return _decode_fields(version, [("body", kind)], buf, exact=kind.startswith("struct:"))["body"]


def _hello_elements_encode(elements: list[dict[str, Any]]) -> bytes:
    out = []
    for el in elements:
        bitmaps = el.get("bitmaps", [])
        length = 4 + 4 * len(bitmaps)
        body = struct.pack("!HH", el.get("type", 1), length) + b"".join(struct.pack("!I", b) for b in bitmaps)
        out.append(body + bytes(_pad8(length) - length))
    return b"".join(out)


def _hello_elements_decode(buf: bytes) -> list[dict[str, Any]]:
    out = []
    off = 0
    while len(buf) - off >= 4:
        etype, length = struct.unpack_from("!HH", buf, off)
        if length < 4 or off + length > len(buf):
            break   # a hello with junk after it is still a hello (the version decides)
        bitmaps = [struct.unpack_from("!I", buf, off + 4 + 4 * i)[0] for i in range((length - 4) // 4)]
        out.append({"type": etype, "bitmaps": bitmaps})
        off += _pad8(length)
    return out


def hello_versions(raw: bytes) -> set[int] | None:
    """The versions a HELLO's version-bitmap element lists (any header version: the element is the same in 1.3,
    1.4 and 1.5); None when it has none (then the peer speaks every version up to the header's)."""
    for el in _hello_elements_decode(raw[HEADER.size:]):
        if el["type"] == 1 and el["bitmaps"]:
            return {32 * i + v for i, word in enumerate(el["bitmaps"]) for v in range(32) if word >> v & 1}
    return None


# ---------------------------------------------------------------- messages
def encode_body(version: int, layout: str, fields: dict[str, Any]) -> bytes:
    """The bytes of one structure (an experimenter message's body, say) of ``layout`` in ``version``."""
    return _encode_fields(version, LAYOUTS[(version, layout)], fields)


def decode_body(version: int, layout: str, buf: bytes) -> dict[str, Any]:
    """The fields of one structure of ``layout`` that fills ``buf``."""
    return _decode_fields(version, LAYOUTS[(version, layout)], buf)


def encode(msg: Msg) -> bytes:
    """The message's bytes, header included (the length is computed)."""
    types = TYPES[msg.version]
    if msg.type not in types:
        raise ValueError(f"no message {msg.type!r} in OpenFlow version 0x{msg.version:02x}")
    values = dict(msg.fields)
    if msg.type in ("multipart_reply", "stats_reply"):
        values["_reply"] = True
    body = _encode_fields(msg.version, LAYOUTS[(msg.version, msg.type)], values)
    return HEADER.pack(msg.version, types[msg.type], HEADER.size + len(body), msg.xid) + body


def decode(buf: bytes) -> Msg:
    """One whole message (``buf`` holds exactly its bytes)."""
    if len(buf) < HEADER.size:
        raise OfpError(OFPET_BAD_REQUEST, OFPBRC_BAD_LEN, "shorter than an OpenFlow header")
    version, mtype, length, xid = HEADER.unpack_from(buf)
    if version not in TYPES:
        raise OfpError(OFPET_BAD_REQUEST, OFPBRC_BAD_VERSION, f"version 0x{version:02x}")
    if length != len(buf):
        raise OfpError(OFPET_BAD_REQUEST, OFPBRC_BAD_LEN, f"header says {length} bytes, got {len(buf)}")
    name = TYPE_NAMES[version].get(mtype)
    if name is None or (version, name) not in LAYOUTS:
        raise OfpError(OFPET_BAD_REQUEST, OFPBRC_BAD_TYPE, f"message type {mtype}")
    ctx: dict[str, Any] = {"_reply": name in ("multipart_reply", "stats_reply")}
    layout = LAYOUTS[(version, name)]
    if layout and layout[0][0] == "mp_type":
        if len(buf) < HEADER.size + 4:
            raise OfpError(OFPET_BAD_REQUEST, OFPBRC_BAD_LEN, "truncated multipart header")
        ctx["mp_type"] = struct.unpack_from("!H", buf, HEADER.size)[0]
    exact = name not in ("hello",)
    fields = _decode_fields(version, layout, buf[HEADER.size:], exact=exact, ctx=ctx)
    return Msg(version, name, xid, fields)


def split(stream: bytearray) -> list[bytes]:
    """Take every complete message off the front of ``stream`` (a connection's receive buffer)."""
    out = []
    while len(stream) >= HEADER.size:
        length = struct.unpack_from("!H", stream, 2)[0]
        if length < HEADER.size:
            raise OfpError(OFPET_BAD_REQUEST, OFPBRC_BAD_LEN, f"header length {length}")
        if len(stream) < length:
            break
        out.append(bytes(stream[:length]))
        del stream[:length]
    return out
