"""edr.runtime."""
