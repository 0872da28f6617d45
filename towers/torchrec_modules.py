"""The four TorchRec names the rankers use, imported without what a run does not use.

``import torchrec`` runs the package's ``__init__``, which imports ``torchrec.distributed`` (FSDP,
the sharding planner, ``torch._dynamo``), and TorchRec's embedding modules import ``tensordict`` for
one ``isinstance`` check: 1.3 s of a one-round run's 2.5-5 s here, of which the modules
the rankers use (``modules.embedding_configs``, ``modules.embedding_modules``,
``sparse.jagged_tensor``, fbgemm's operators under them) take about 0.3 s.

:func:`load` imports those three modules from TorchRec's own files:

- under packages whose ``__init__`` waits until something reads a name the package itself defines
  (:class:`_DeferredPackage`): ``import torchrec.distributed`` and every other submodule import
  work as usual, and ``torchrec.EmbeddingBagCollection`` runs the real ``__init__`` first, in the
  same module object;
- with ``torchrec.sparse.tensor_dict`` as :func:`maybe_td_to_kjt`, which returns a
  ``KeyedJaggedTensor`` as it is (what TorchRec's function returns for one: a ``KeyedJaggedTensor``
  is not a ``TensorDict``) and hands anything else to TorchRec's function, loaded then.

The classes are TorchRec's own, the same objects a later ``import torchrec`` binds, so sharding
(``recsim.recsys.distributed``) recognizes the modules built from them. Where the packages are
already imported, :func:`load` takes the names from them.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
import threading
import types
from dataclasses import dataclass
from typing import Any

_PACKAGES = ("torchrec", "torchrec.modules", "torchrec.sparse")
_TENSOR_DICT = "torchrec.sparse.tensor_dict"
_lock = threading.Lock()


@dataclass(frozen=True)
class TorchRec:
    """TorchRec's classes, as ``torchrec.<name>`` binds them."""

    EmbeddingBagCollection: type
    EmbeddingBagConfig: type
    PoolingType: type
    KeyedJaggedTensor: type


class _DeferredPackage(types.ModuleType):
    """A package module whose ``__init__`` runs, in this module's namespace, when a name it does
    not yet hold is read (its submodules are imported into it as usual until then)."""

    def __getattr__(self, name: str) -> Any:
        probe = name.startswith("__") and name not in ("__all__", "__version__")  # the import system's
        if probe or self.__dict__.get("_deferred_done", True):
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        self.__dict__["_deferred_done"] = True
        self.__spec__.loader.exec_module(self)  # the package's own __init__
        return getattr(self, name)


def _deferred(name: str) -> types.ModuleType:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.submodule_search_locations is None:
        raise ImportError(f"{name} is not an installed package")
    module = _DeferredPackage(name)
    module.__spec__, module.__path__ = spec, list(spec.submodule_search_locations)
    module.__file__, module.__package__, module.__loader__ = spec.origin, name, spec.loader
    module.__dict__["_deferred_done"] = False
    parent, _, child = name.rpartition(".")
    sys.modules[name] = module
    if parent:
        setattr(sys.modules[parent], child, module)
    return module


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
    ``sys.modules``, where the shim keeps its name)."""
    with _lock:
        if not _real_tensor_dict:
            spec = sys.modules[_TENSOR_DICT].__dict__["real_spec"]
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            _real_tensor_dict.append(module)
    return _real_tensor_dict[0]


def load() -> TorchRec:
    """TorchRec's ``EmbeddingBagCollection``, ``EmbeddingBagConfig``, ``PoolingType`` and
    ``KeyedJaggedTensor`` (see the module docstring), without its import-time tracing notice."""
    logging.getLogger("torch.fx._symbolic_trace").setLevel(logging.ERROR)
    with _lock:
        if not all(name in sys.modules for name in _PACKAGES):
            import torch  # noqa: F401  (before any TorchRec module, as torchrec/__init__ has it)

            for name in _PACKAGES:
                if name not in sys.modules:
                    _deferred(name)
            if _TENSOR_DICT not in sys.modules:
                shim = types.ModuleType(_TENSOR_DICT, "TorchRec's maybe_td_to_kjt without tensordict")
                shim.maybe_td_to_kjt = maybe_td_to_kjt  # type: ignore[attr-defined]
                shim.real_spec = importlib.util.find_spec(_TENSOR_DICT)  # type: ignore[attr-defined]
                sys.modules[_TENSOR_DICT] = shim
                sys.modules["torchrec.sparse"].tensor_dict = shim  # type: ignore[attr-defined]
        configs = importlib.import_module("torchrec.modules.embedding_configs")
        modules = importlib.import_module("torchrec.modules.embedding_modules")
        jagged = importlib.import_module("torchrec.sparse.jagged_tensor")
    return TorchRec(
        modules.EmbeddingBagCollection,
        configs.EmbeddingBagConfig,
        configs.PoolingType,
        jagged.KeyedJaggedTensor,
    )
