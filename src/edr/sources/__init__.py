"""edr.sources."""
