"""The node level above the plugin and the datapath: the operator CLI (`xdpcnictl`) and the node
agent. Imports `cni` and `datapath`; neither of them imports this package."""
