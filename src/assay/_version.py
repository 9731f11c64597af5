"""The package version, in its own module so that anything can read it without importing the rest."""

__version__ = "0.1.0"
