"""Errors that reach the user: each message names the file (or config key) and the problem."""


class ClipvaError(Exception):
    """Base class of errors that are reported as one clear message, without a traceback."""


class ConfigError(ClipvaError):
    """A config value that cannot be used; the message names the key and the allowed values."""


class BadInputError(ClipvaError):
    """A data file that cannot be used; the message names the file (and frame) and the problem."""
