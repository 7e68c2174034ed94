"""The one exception type labclip raises for problems a user can fix."""


class LabclipError(Exception):
    """A user-facing error whose message is one line that says what is wrong and what to do."""
