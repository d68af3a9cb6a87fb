"""The errors of talking to Label Studio (re-exported by :mod:`detector_al.label_studio.client`)."""

from __future__ import annotations


class LabelStudioError(RuntimeError):
    """Label Studio could not be used; the message says what to check."""


class ImageFetchError(RuntimeError):
    """A task's image could not be fetched (only that task fails); the message names the URL and the reason."""
