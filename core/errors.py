"""The errors a user sees.

A :class:`UserError` carries a message written for the person running the command: it names
the file, line or page at fault and says what to do. The command line prints it as one
``error: <message>`` line (exit status 2), without a traceback; anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """An error whose message is for the user (what is wrong, where, what to do)."""
