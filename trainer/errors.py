"""Errors of the trainer package. Each says what was wrong and publishes nothing."""

from __future__ import annotations


class TrainerError(Exception):
    """Base class: the run stops, nothing is published, the message says why."""


class DatasetError(TrainerError):
    """The approved examples cannot make a usable dataset (empty, all duplicates, too long)."""


class SnapshotCorrupt(TrainerError):
    """A dataset snapshot's files do not match its manifest."""


class EvaluationError(TrainerError):
    """The candidate or the live version could not be scored (engine down, load refused)."""


class TrainingLocked(TrainerError):
    """Another worker holds this alias's training lock."""


class MissingExtra(TrainerError):
    """A heavy dependency (torch, peft, bitsandbytes) is not installed."""
