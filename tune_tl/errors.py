"""The one exception type for user mistakes."""


class TuneTLError(Exception):
    """A problem with the user's input (a file, a key, a flag) that they can fix.

    The message names what is wrong and what to do; the CLI prints it without a traceback.
    """
