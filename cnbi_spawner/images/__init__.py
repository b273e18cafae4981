"""The known-image registry: which course images may be launched, and by which names."""

from .model import KnownImage, Package

__all__ = ["KnownImage", "Package"]
