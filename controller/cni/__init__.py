"""rackroute-cni: the CNI 1.0 plugin that gives pods a routed veth and an address.

`plugin` is the executable's entry point (env + stdin in, JSON out), `spec` holds the
CNI wire types (versions, results, errors), `netconf` parses and validates the
network configuration and the CNI_* environment, `ipam` is the file-backed address
store under the node's data directory, `netsetup` builds and checks the veth pair
with pyroute2, and `bpfattach` attaches the agent's pinned datapath programs.
"""
