"""rnnkit's version (one place: the package, saved model directories and the service read it)."""

__version__ = "0.1.0"
