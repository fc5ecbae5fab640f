"""The dataset registry: ``@register_dataset("name")`` on a loader, ``list_datasets()``, ``dataset_loader(name)``.

A loader is a function that takes keyword options only and returns the dataset (``InMemoryData`` or
anything with the same interface, ``FolderData``): the runner passes ``data_root`` and ``download`` to every
loader (``RUNNER_OPTIONS``), so a loader takes ``**_`` for the options it does not use, and the ``[data]``
keys a user may set (``--set data.KEY=VALUE``) are its other keyword parameters; ``check_data_options``
reads them from its signature, with their defaults' types.

Order: ``list_datasets()`` (the ``--dataset`` help, ``--list`` and the unknown-dataset message) lists the
datasets registered with an explicit ``order=`` first, by that number (the built-in ones: digits 10,
cifar10 20, cifar100 21, imagefolder 30, MNIST 40, FashionMNIST 41), then those registered without one, in
the order they were registered (``kdcore.data`` imports the dataset files sorted by module name). The order
does not depend on the file names, so a new dataset file never reorders the built-in names.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Callable, Iterator

from kdcore.data.common import DataError

__all__ = ["DATASETS", "register_dataset", "unregister_dataset", "list_datasets", "dataset_loader"]

_LOADERS: dict[str, Callable] = {}  # name -> loader, in registration order
_ORDER: dict[str, float] = {}  # name -> its explicit ``order=`` (datasets registered without one are absent)


def register_dataset(name: str, *, order: float | None = None):
    """Decorator: ``@register_dataset("blobs") def load_blobs(data_root=None, ..., **_): ...`` registers the
    loader under ``name`` and returns it unchanged. ``order`` places the name in ``list_datasets()`` (module
    docstring); a name registered twice raises ``ValueError``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a dataset name must be a non-empty string, got {name!r}")

    def wrap(loader: Callable) -> Callable:
        if not callable(loader):
            raise ValueError(f"dataset {name!r}: @register_dataset decorates a loader function, got {loader!r}")
        if name in _LOADERS:
            raise ValueError(f"dataset {name!r} is registered twice ({_LOADERS[name].__module__}."
                             f"{_LOADERS[name].__qualname__} and {loader.__module__}.{loader.__qualname__})")
        _LOADERS[name] = loader
        if order is not None:
            _ORDER[name] = order
        return loader

    return wrap


def unregister_dataset(name: str) -> None:
    """Forget dataset ``name`` (a test or a notebook that registered one for a while); unknown: ``DataError``."""
    dataset_loader(name)
    del _LOADERS[name]
    _ORDER.pop(name, None)


def list_datasets() -> list[str]:
    """The registered dataset names: explicit ``order=`` first, by it, then the others as registered."""
    ordered = sorted((n for n in _LOADERS if n in _ORDER), key=_ORDER.__getitem__)  # stable: ties as registered
    return ordered + [n for n in _LOADERS if n not in _ORDER]


def dataset_loader(name: str) -> Callable:
    """The loader registered as ``name``; an unknown name is a ``DataError`` listing the known ones."""
    try:
        return _LOADERS[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}; known datasets: {', '.join(list_datasets())}") from None


class _Datasets(Mapping):
    """``DATASETS``: a read-only, live view of the registry (name -> loader) in ``list_datasets()`` order,
    what the hand-written dict of that name was before datasets registered themselves."""

    def __getitem__(self, name: str) -> Callable:
        return _LOADERS[name]

    def __iter__(self) -> Iterator[str]:
        return iter(list_datasets())

    def __len__(self) -> int:
        return len(_LOADERS)

    def __repr__(self) -> str:
        return f"DATASETS({', '.join(list_datasets())})"


DATASETS: Mapping[str, Callable] = _Datasets()
