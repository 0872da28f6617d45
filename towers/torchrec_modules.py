"""The four TorchRec names the rankers use, imported without what a run does not use.

``import torchrec`` runs the package's ``__init__``, which imports ``torchrec.distributed`` (FSDP,
the sharding planner), and TorchRec's embedding modules import ``tensordict`` (with
``torch._dynamo``) for one ``isinstance`` check: together about 1.2 s here, against about 0.35 s
for the modules the rankers use (``modules.embedding_configs``, ``modules.embedding_modules``,
``sparse.jagged_tensor`` and fbgemm's operators under them).

:func:`load` imports those three modules from TorchRec's own files, in two steps:

1. Under bare stand-ins for the packages ``torchrec``, ``torchrec.modules`` and ``torchrec.sparse``
   (their ``__path__``, not their ``__init__``), removed again once the three are loaded. A later
   import of anything else in TorchRec (``import torchrec``, ``torchrec.distributed``) imports the
   packages as usual, their ``__init__`` first; the modules already loaded are reused, so the
   classes are the same objects (sharding recognizes the modules built from them). The packages'
   children loaded in step 1 are bound on them before their ``__init__`` runs
   (:class:`_BindLoadedChildren`), as the import system binds a child it loads.
2. With ``torchrec.sparse.tensor_dict`` as :func:`maybe_td_to_kjt`, which returns a
   ``KeyedJaggedTensor`` as it is (as TorchRec's function does: a ``KeyedJaggedTensor`` is not a
   ``TensorDict``) and hands anything else to TorchRec's function, loaded then, with ``tensordict``.

Where TorchRec's modules are already imported, :func:`load` takes the names from them.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import sys
import threading
import types
from dataclasses import dataclass
from typing import Any

_PACKAGES = ("torchrec", "torchrec.modules", "torchrec.sparse")
_MODULES = (
    "torchrec.modules.embedding_configs",
    "torchrec.modules.embedding_modules",
    "torchrec.sparse.jagged_tensor",
)
_TENSOR_DICT = "torchrec.sparse.tensor_dict"
_lock = threading.RLock()


@dataclass(frozen=True)
class TorchRec:
    """TorchRec's classes, as ``torchrec.<name>`` binds them."""

    EmbeddingBagCollection: type
    EmbeddingBagConfig: type
    PoolingType: type
    KeyedJaggedTensor: type


class _BindLoadedChildren(importlib.abc.Loader):
    """A package's own loader that first binds the children already in ``sys.modules`` on the
    package (``torchrec.types`` on ``torchrec``), then runs the package's ``__init__``."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        prefix = module.__name__ + "."
        for name, child in list(sys.modules.items()):
            if name.startswith(prefix) and "." not in name[len(prefix) :]:
                setattr(module, name[len(prefix) :], child)
        self.loader.exec_module(module)

    def __getattr__(self, name: str) -> Any:  # resource readers and the rest: the package's loader
        return getattr(self.loader, name)


class _PackageFinder(importlib.abc.MetaPathFinder):
    """Finds the three packages as the path finder does, with :class:`_BindLoadedChildren`; leaves
    ``sys.meta_path`` once all three are imported."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if name not in _PACKAGES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _BindLoadedChildren(spec.loader)
        if all(p in sys.modules for p in _PACKAGES if p != name) and self in sys.meta_path:
            sys.meta_path.remove(self)
        return spec


def maybe_td_to_kjt(features: Any, keys: list[str] | None = None) -> Any:
    """``torchrec.sparse.tensor_dict.maybe_td_to_kjt``: a ``KeyedJaggedTensor`` as it is; anything
    else (a ``TensorDict``) through TorchRec's function, with ``tensordict``, imported then."""
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    if isinstance(features, KeyedJaggedTensor):
        return features
    return _torchrec_tensor_dict().maybe_td_to_kjt(features, keys)


_real_tensor_dict: list[types.ModuleType] = []


def _torchrec_tensor_dict() -> types.ModuleType:
    """TorchRec's own ``tensor_dict`` module, executed from its file once (not registered in
    ``sys.modules``, where the stand-in keeps its name)."""
    with _lock:
        if not _real_tensor_dict:
            spec = sys.modules[_TENSOR_DICT].__dict__["real_spec"]
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            _real_tensor_dict.append(module)
    return _real_tensor_dict[0]


def _import_without_packages() -> None:
    """Step 1 and 2 of the module docstring."""
    import torch  # noqa: F401  (before any TorchRec module, as torchrec/__init__ has it)

    stand_ins = [name for name in _PACKAGES if name not in sys.modules]
    for name in stand_ins:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.submodule_search_locations is None:
            raise ImportError(f"{name} is not an installed package")
        package = types.ModuleType(name)
        package.__spec__, package.__path__ = spec, list(spec.submodule_search_locations)
        sys.modules[name] = package
    try:
        if _TENSOR_DICT not in sys.modules:
            shim = types.ModuleType(_TENSOR_DICT, "TorchRec's maybe_td_to_kjt without tensordict")
            shim.maybe_td_to_kjt = maybe_td_to_kjt  # type: ignore[attr-defined]
            shim.real_spec = importlib.util.find_spec(_TENSOR_DICT)  # type: ignore[attr-defined]
            sys.modules[_TENSOR_DICT] = shim
        for name in _MODULES:
            importlib.import_module(name)
    finally:
        for name in stand_ins:
            del sys.modules[name]
        if stand_ins:
            sys.meta_path.insert(0, _PackageFinder())


def load() -> TorchRec:
    """TorchRec's ``EmbeddingBagCollection``, ``EmbeddingBagConfig``, ``PoolingType`` and
    ``KeyedJaggedTensor`` (see the module docstring), without its import-time tracing notice."""
    logging.getLogger("torch.fx._symbolic_trace").setLevel(logging.ERROR)
    with _lock:
        if not all(name in sys.modules for name in _MODULES):
            _import_without_packages()
    configs, modules, jagged = (sys.modules[name] for name in _MODULES)
    return TorchRec(
        modules.EmbeddingBagCollection,
        configs.EmbeddingBagConfig,
        configs.PoolingType,
        jagged.KeyedJaggedTensor,
    )
