"""The one base class of every error a user's input can cause.

A bad program, configuration, run directory, optimizer or task name is the
user's to fix, not a bug: the command line prints such an error's message
and exits with status 2, and catches nothing else. Each package raises its
own subclasses (ProgramError, ConfigError, RunDirError, ...), all of them
ValueErrors too, so callers that caught ValueError before still do.
"""


class OptsearchError(ValueError):
    """Something the user asked for cannot be done; the message says what and why."""
