"""Python side of the xdpcni datapath: load/pin/attach the eBPF programs, endpoint tables, stats."""
