"""Tunnel ports' control plane: the route table, the neighbour cache, the tunnel ports listing and their
ovs-appctl commands (OVS's ``ovs/route/*``, ``tnl/neigh/*``, ``tnl/ports/show``)."""
