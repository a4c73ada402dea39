"""Build any defense by name: ``build("median:kernel=3x3")``, ``available()`` lists them."""
from __future__ import annotations

from ..jpeg.codec import DiffJPEG
from ..jpeg.real import JPEG
from ..spec import Registry
from .random_jpeg import RandomJPEG

DEFENSES = Registry("defense")
register = DEFENSES.register
available = DEFENSES.available
build = DEFENSES.build

register("jpeg", JPEG)
register("diffjpeg", DiffJPEG)
register("random_jpeg", RandomJPEG)
