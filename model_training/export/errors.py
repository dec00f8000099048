"""The one error export raises."""

from __future__ import annotations


class ExportError(RuntimeError):
    """The run cannot be exported, or the exported model failed verification."""
