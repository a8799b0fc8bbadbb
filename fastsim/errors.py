"""Domain errors of the fast simulator (``cli.common`` prints them without a traceback)."""

from __future__ import annotations


class CheckpointError(Exception):
    """A model file that is missing, truncated, not a fastsim checkpoint, or made for
    another reaction or coordinate mapping."""


class TrainingError(Exception):
    """Training cannot start or continue (empty sample, non-finite loss, bad resume)."""
