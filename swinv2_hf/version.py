"""The package version, in one place: setup.py reads it, and every folder the package writes records it."""

__version__ = "0.1.0"
