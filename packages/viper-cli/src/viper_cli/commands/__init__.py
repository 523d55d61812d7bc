"""Click command groups, one module per surface."""
