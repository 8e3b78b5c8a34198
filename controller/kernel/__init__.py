"""Kernel ports (routes, links, tunnels): a Protocol each, a pyroute2 adapter and a fake."""
