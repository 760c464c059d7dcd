"""Optimizers: KOALA++ (the subject of every study) and the original KOALA-V (a baseline)."""

from ._koalapp import KOALAPlusPlus

__all__ = ["KOALAPlusPlus"]
