"""edr: an endpoint detection and response agent on Trio."""

__version__ = "0.1.0"
