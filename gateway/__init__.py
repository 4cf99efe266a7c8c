"""gateway: a real-time voice and avatar gateway."""

__version__ = "0.1.0"
