"""The one exception type labclip raises for problems a user can fix."""


class LabclipError(Exception):
    """A user-facing error whose message is one line that says what is wrong and what to do."""


class UnknownLanguage(LabclipError):
    """A file lacks the language column asked for; ``found`` lists the language columns it has."""

    def __init__(self, message: str, found: list[str]) -> None:
        super().__init__(message)
        self.found = list(found)
