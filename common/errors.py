"""The one exception type for mistakes the user must fix (bad config, missing file, ...).

The scripts catch it once and print its message as a single line, without a traceback.
Anything else that escapes is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input; the message says what to do about it."""
