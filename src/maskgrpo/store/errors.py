"""Errors raised by the store. Every message names the full URI it is about."""

from __future__ import annotations


class StoreError(RuntimeError):
    """Base class: a store operation failed; the message names the URI."""


class NotCommittedError(StoreError):
    """Nothing has been committed at that URI (no pointer, or no such run file)."""


class CorruptOutputError(StoreError):
    """A committed output does not match its manifest (size, digest, missing file, bad manifest)."""


class TooLargeError(CorruptOutputError):
    """An object is larger than it may be (its manifest's size, a document limit): not read."""


class StoreUnreachableError(StoreError):
    """The store cannot be used at all: endpoint down, DNS, refused connection, bad credentials,
    missing bucket, or an unwritable local root."""
