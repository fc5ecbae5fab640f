"""What the in-memory loaders (``data``, ``idx_data``) and the image-folder loader (``folder_data``) share."""
from __future__ import annotations

from pathlib import Path

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class DataError(RuntimeError):
    """A dataset cannot be loaded; the message says where we looked and what to do."""


def folder_contents(folder: Path) -> str:
    """What is actually at ``folder``, in a few words (for the error messages)."""
    if not folder.exists():
        return "no such folder"
    if not folder.is_dir():
        return "a file, not a folder"
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    if not names:
        return "an empty folder"
    shown = ", ".join(names[:8]) + (f", ... ({len(names)} entries)" if len(names) > 8 else "")
    return f"a folder holding {shown}"
