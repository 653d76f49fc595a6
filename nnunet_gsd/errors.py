"""Errors that reach the user as one clear message (no traceback)."""


class UserError(ValueError):
    """Bad input or settings: the message names the file or setting and the fix."""
