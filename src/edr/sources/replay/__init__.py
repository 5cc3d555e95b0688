"""edr.sources.replay."""
