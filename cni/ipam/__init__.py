"""Address management: the built-in host-local-style allocator and delegation to IPAM plugins."""
