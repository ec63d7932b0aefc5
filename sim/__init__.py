"""netns cluster simulator: a wire, nodes and pods in network namespaces, the runtime-in-miniature
that calls the CNI executable, packet helpers and the demo. A product feature (`xdpcnictl demo`)
shared by the tests and the benchmarks; it imports `cni` and `datapath`, never the other way."""
