"""Hilo's shared library: what every Hilo service has in common, written once."""

__version__ = "0.1.0"
