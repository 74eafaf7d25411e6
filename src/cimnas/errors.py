"""User-facing errors: the CLI prints them as one line on stderr and exits with code 2."""


class CimnasError(ValueError):
    """Bad input from the user (config value, name, file). The message says what and how to fix it."""


def check(condition: bool, message: str) -> None:
    """Raise `CimnasError(message)` unless `condition` holds."""
    if not condition:
        raise CimnasError(message)
