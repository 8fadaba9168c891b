"""Project-wide exception types. Each carries the exit code the CLI ends with (``cli.main``
prints the message as one line, no traceback)."""

from __future__ import annotations


class RefineDPError(Exception):
    """Base of the errors that end a run with a one-line message."""

    exit_code = 1


class ConfigError(RefineDPError, ValueError):
    """A configuration value is invalid (raised before anything is written or compiled).

    ``field`` is the dotted name of the offending field when there is one; ``prefixed`` puts
    the name of the enclosing config section in front of it."""

    exit_code = 2

    def __init__(self, message: str, field: str | None = None, detail: str | None = None):
        super().__init__(message)
        self.field, self.detail = field, detail

    @classmethod
    def for_field(cls, field: str, value, allowed: str) -> ConfigError:
        detail = f"= {value!r}: {allowed}"
        return cls(f"{field} {detail}", field=field, detail=detail)

    def prefixed(self, section: str) -> ConfigError:
        if self.field is not None:
            name = f"{section}.{self.field}"
            return ConfigError(f"{name} {self.detail}", field=name, detail=self.detail)
        return ConfigError(f"{section}: {self}")


class CorruptArtifactError(RefineDPError):
    """A checkpoint or dataset on disk fails its checksum or cannot be read. ``path`` is the
    bad file or folder, ``stage`` the pipeline stage that writes it (when known)."""

    exit_code = 3

    def __init__(self, message: str, path: str | None = None, stage: str | None = None):
        super().__init__(message)
        self.path, self.stage = path, stage


class InsufficientMemoryError(RefineDPError):
    """A compiled step (or the state it runs on) would not fit in the available memory."""

    exit_code = 4
