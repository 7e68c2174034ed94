"""The one exception type labclip raises for problems a user can fix."""


class LabclipError(Exception):
    """A user-facing error whose message is one line that says what is wrong and what to do."""


class UnknownLanguage(LabclipError):
    """A file lacks the language column asked for; ``found`` lists the language columns it has."""

    def __init__(self, message: str, found: list[str]) -> None:
        super().__init__(message)
        self.found = list(found)


def at_least(value: object, minimum: int, what: str) -> int:
    """``value`` as a whole number of at least ``minimum`` (an int, or text of one), the one check of
    counts such as ``top_k`` and ``batch_size`` everywhere they are given.

    Raises:
        LabclipError: ``what`` is not a whole number, or is smaller than ``minimum``.
    """
    number = value
    if isinstance(value, str):
        try:
            number = int(value.strip())
        except ValueError:
            number = None
    if isinstance(number, bool) or not isinstance(number, int):
        raise LabclipError(f"{what}: expected a whole number, got {str(value)[:40]!r}")
    if number < minimum:
        raise LabclipError(f"{what}: must be {minimum} or more, got {number}")
    return number
