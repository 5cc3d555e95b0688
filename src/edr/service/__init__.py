"""edr.service."""
