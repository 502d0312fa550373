"""Errors that reach a person: one clear line saying what is wrong and how to fix it."""


class UserError(Exception):
    """A problem with the user's input or environment, not a bug.

    The CLI prints ``str(error)`` on one line and exits non-zero, without a traceback.
    """
