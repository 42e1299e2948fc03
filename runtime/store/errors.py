"""Errors the field store raises; each message says what happened and what the operator can do."""

from __future__ import annotations


class StoreError(Exception):
    """Base class for field-store errors."""


class StoreBusyError(StoreError):
    """Another process already has the store open for writing."""


class LowDiskSpaceError(StoreError):
    """Too little free space to start a patient or a recording; nothing was started."""


class DiskFullError(StoreError):
    """The disk filled while recording: the recording stopped and its WAV is valid up to `samples_kept`."""

    def __init__(self, message: str, samples_kept: int):
        super().__init__(message)
        self.samples_kept = samples_kept


class InvalidDemographicsError(StoreError, ValueError):
    """Demographics failed runtime.metadata.check_demographics; `problems` lists each one."""

    def __init__(self, problems: list[str]):
        super().__init__("demographics refused, nothing was stored: " + "; ".join(problems))
        self.problems = problems
