"""edr.sources.etw."""
