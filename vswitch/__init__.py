"""pyvswitch: the parts that decide (bridges, datapath threads, OVSDB daemon, CLI)."""

__version__ = "0.1.0"
