"""Where the Geneve options the TLV map names (``tun_metadata0`` .. ``tun_metadata63``) live in the flow key.

```
 ovs-ofctl add-tlv-map "{class=0x102,type=0x80,len=4}->tun_metadata0"
        │ NXT_TLV_TABLE_MOD (vswitch.openflow.nxhandlers)
        ▼
 place(): tun_metadata0 -> 32 bits of W_TUN_METADATA (8 key words, 64 bytes)   ──► listeners: the match-field
                                                                                    tables (ofproto.rules, the
 fields.flow_slice("tun_metadata0") ─────────────────────────────────────────────   wire's MATCHABLE) re-read it
```

One placement for the whole switch: it holds every bridge's map (``vswitch.openflow.nxhandlers.TlvMap``: a map
per bridge, as OVS keeps; two bridges may map an index only to the same option). An option of 4 bytes takes
half a key word, one of 8·k bytes k whole words; the key has room for 64 bytes of options (OVS's
userspace datapath: 256). The map itself is OVS's (any length it takes, 256 bytes in all); an option
the key cannot hold (no room left, or a length neither 4 nor a multiple of 8) stays mapped without a
place, and a flow that names it is refused with the reason (``why_unplaced``). A field keeps its place
while it stays mapped: adding options never moves the others. Deleting a mapping that flows still use is
refused with OVS's NXTTMFC_INVALID_TLV_DEL (``vswitch.openflow.nxhandlers``: the asking bridge's flows).
"""

from __future__ import annotations

from collections.abc import Callable

from dpif import key as K

HALVES = 2 * K.TUN_METADATA_WORDS   # 32-bit places in the key's option words
SPACE = 8 * K.TUN_METADATA_WORDS    # bytes

#: field name -> (option class, type, length in bytes)
_maps: dict[str, tuple[int, int, int]] = {}
#: field name -> (first half-word, half-words)
_places: dict[str, tuple[int, int]] = {}
_listeners: list[Callable[[], None]] = []


def _free_run(used: set[int], n: int) -> int:
    """The first run of ``n`` free half-words (whole words when n >= 2), or -1."""
    step = 1 if n == 1 else 2
    for start in range(0, HALVES - n + 1, step):
        if all(h not in used for h in range(start, start + n)):
            return start
    return -1


def place(maps: dict[int, tuple[int, int, int]]) -> None:
    """Make ``maps`` (index -> (class, type, length)) the switch's TLV map and give each option a place in
    the key when it has a length the key takes and there is room (``why_unplaced`` says why not)."""
    names = {f"tun_metadata{i}": m for i, m in maps.items()}
    places = {n: p for n, p in _places.items() if n in names and names[n][2] == _maps[n][2]}
    used = {h for start, n in places.values() for h in range(start, start + n)}
    for name in sorted(names, key=lambda n: (-names[n][2], int(n[12:]))):   # big ones first: fewer holes
        length = names[name][2]
        if name in places or (length != 4 and length % 8):
            continue
        n = length // 4
        start = _free_run(used, n)
        if start >= 0:
            places[name] = (start, n)
            used.update(range(start, start + n))
    _maps.clear()
    _maps.update(names)
    _places.clear()
    _places.update(places)
    for fn in _listeners:
        fn()


def why_unplaced(name: str) -> str:
    """Why a ``tun_metadata`` field has no place in the key ("" when it has one)."""
    if name in _places:
        return ""
    if name not in _maps:
        return f"{name} is not in the TLV map (ovs-ofctl add-tlv-map)"
    length = _maps[name][2]
    if length != 4 and length % 8:
        return f"{name}: pyvswitch's flow key takes options of 4 bytes or a multiple of 8, not {length}"
    return f"{name}: the flow key holds {SPACE} bytes of Geneve options, and they are taken"


def flow_slice(name: str) -> tuple[int, int, int] | None:
    """``(word, shift, bits)`` of a mapped ``tun_metadata`` field in the key (None: not mapped)."""
    p = _places.get(name)
    if p is None:
        return None
    start, n = p
    word = K.W_TUN_METADATA + start // 2
    if n == 1:
        return word, 0 if start % 2 else 32, 32
    return word, 0, 32 * n


def length(name: str) -> int | None:
    """The option length the map gives ``name`` in bytes (None: not mapped)."""
    m = _maps.get(name)
    return m[2] if m is not None else None


def mapped() -> dict[str, tuple[int, int, int]]:
    """field name -> (class, type, length) of the current map."""
    return dict(_maps)


def placed() -> list[str]:
    """The mapped fields that have a place in the key."""
    return sorted(_places)


def listen(fn: Callable[[], None]) -> None:
    """Call ``fn`` after every change of the map."""
    _listeners.append(fn)
