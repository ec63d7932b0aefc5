"""xdpcni CNI plugin."""
