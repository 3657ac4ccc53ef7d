"""gatehook: runs tenant-defined Actions at the trigger points of sign-in flows, over NATS."""

__version__ = "0.1.0"
