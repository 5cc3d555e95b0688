"""edr.alerts."""
