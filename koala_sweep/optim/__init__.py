"""Optimizers: KOALA++ (the subject of every study) and the original KOALA-V (a baseline)."""

from ._koala_v import KOALAV
from ._koalapp import VARIANTS, KOALAPlusPlus

__all__ = ["KOALAPlusPlus", "KOALAV", "VARIANTS"]
