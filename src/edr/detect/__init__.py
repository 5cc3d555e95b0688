"""edr.detect."""
