"""User-facing errors: the CLI prints these as one line and exits with status 2."""


class UserError(Exception):
    """A mistake in what the user gave (a path, a file's content, a flag), not a bug."""
