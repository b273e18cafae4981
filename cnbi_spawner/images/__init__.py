"""The known-image registry: which course images may be launched, and by which names.

Pure parts (no I/O, cheap to import): ``model`` (KnownImage, Package), ``imagestreams``
(ImageStream dict -> images), ``static`` (KNOWN_IMAGES config -> images), ``index``
(ImageIndex, resolve). The live registry is ``registry.ImageRegistry`` (imports the
Kubernetes client, so import it from its module).
"""

from .imagestreams import parse_imagestream
from .index import ImageIndex, resolve
from .model import KnownImage, Package
from .static import parse_static

__all__ = ["ImageIndex", "KnownImage", "Package", "parse_imagestream", "parse_static", "resolve"]
