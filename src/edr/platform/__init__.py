"""The platform seam: what edr needs to know about the operating system it runs on."""
