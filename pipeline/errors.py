"""Errors calcmine reports to users as one line: what, where, how to fix. Never patient text."""

from __future__ import annotations


class CalcmineError(Exception):
    """An error with a message fit to show a user as a single line."""


class RuleFileError(CalcmineError, ValueError):
    """A shipped or user rule file is malformed."""


class InputError(CalcmineError):
    """An input archive cannot be read as notes."""


class NoteError(CalcmineError):
    """One note could not be processed; the batch goes on."""
