"""Project-wide exception types."""


class ConfigError(ValueError):
    """A configuration value is invalid (raised before anything compiles)."""
