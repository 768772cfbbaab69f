"""The one exception type for user errors: bad config, missing or corrupt model files.

The CLI turns it into a one-line message and exit code 2. Anything else that escapes is a bug.
"""


class BenchError(Exception):
    """A problem with what the user asked for, with where it is and what would be valid."""
