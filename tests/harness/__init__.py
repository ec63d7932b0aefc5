"""Test-only helpers (node snapshots for leak checks); the simulator itself lives in `sim/`."""
