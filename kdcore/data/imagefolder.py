"""Any image-folder dataset (ImageNet included: ``<data-root>/train/<class>/*`` and ``<data-root>/val/<class>/*``),
streamed from disk by a multi-worker DataLoader (``kdcore.data.folder.FolderData``)."""
from __future__ import annotations

from kdcore.data.folder import FolderData
from kdcore.data.memory import check_options
from kdcore.data.registry import register_dataset


@register_dataset("imagefolder", order=30)
def load_imagefolder(data_root=None, image_size: int = 224, workers: int = 4, augment: str | None = None,
                     normalize: bool = True, **_: object):
    check_options("imagefolder", augment, normalize)
    return FolderData(data_root, image_size=image_size, workers=workers, augment=augment, normalize=normalize)
