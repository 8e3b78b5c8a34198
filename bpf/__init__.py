"""rackroute eBPF datapath: service load balancing programs, their maps and the sync."""
