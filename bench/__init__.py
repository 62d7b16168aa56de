"""Packet-rate benchmarks for pyvswitch, Open vSwitch and the Linux bridge (``python -m bench``)."""
