"""Errors that vislab reports to users as one readable paragraph (the CLI exits with code 2)."""


class VislabError(Exception):
    """A mistake in the user's input (config, data, paths): shown without a traceback."""


class ConfigError(VislabError):
    """An invalid configuration value; the message names the field, the value and what is allowed."""


class DataError(VislabError):
    """A data set that cannot be loaded; the message names the file or folder and how to fix it."""
