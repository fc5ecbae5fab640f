"""What the in-memory loaders (``data``) and the image-folder loader (``folder_data``) share."""
from __future__ import annotations

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class DataError(RuntimeError):
    """A dataset cannot be loaded; the message says where we looked and what to do."""
