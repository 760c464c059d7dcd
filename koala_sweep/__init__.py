"""koala-sweep: hyperparameter sensitivity studies of KOALA++ against Adam and SGD."""

__version__ = "0.1.0"
