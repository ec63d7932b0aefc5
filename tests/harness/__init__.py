"""netns cluster harness: simulated nodes, pods and a wire, shared by tests, demo and benchmarks."""
