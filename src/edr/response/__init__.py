"""edr.response."""
