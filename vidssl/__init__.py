"""vidssl: self-supervised video representation learning, reproducibly."""

__version__ = "0.1.0"
