"""One module per CNI verb; each takes the parsed environment and network config."""
