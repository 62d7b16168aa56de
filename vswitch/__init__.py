"""pyvswitch: the parts that decide (bridges, datapath threads, OVSDB daemon, CLI)."""

__version__ = "0.1.0"

import warnings

# The ovs package's poller imports eventlet when it is installed (os-ken brings it), and eventlet
# warns on import that it is deprecated; pyvswitch does not use eventlet.
warnings.filterwarnings("ignore", message="\nEventlet is deprecated")
