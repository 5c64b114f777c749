"""thread_bench: the same CNN trained in Keras and PyTorch under one protocol, tracked in MLflow, compared
honestly; and, through it, a tool that counts canvas threads in X-rays of paintings.

The thread-density workload's modules lived at the top of the package before every workload had a folder
(``thread_bench/workloads/<name>/``). Code and models written then import them by their old names, so those
names still resolve, to the very same modules (:data:`MOVED_MODULES`): nothing in the suite uses them.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from types import CodeType, ModuleType

_THREAD_DENSITY = "thread_bench.workloads.thread_density"

#: Old module name -> where it lives now.
MOVED_MODULES = {
    "thread_bench.counting": f"{_THREAD_DENSITY}.counting",
    "thread_bench.data.corpus": f"{_THREAD_DENSITY}.corpus",
    "thread_bench.data.prepare": f"{_THREAD_DENSITY}.prepare",
    "thread_bench.data.synthetic": f"{_THREAD_DENSITY}.synthetic",
    "thread_bench.models.keras_model": f"{_THREAD_DENSITY}.keras_model",
    "thread_bench.models.spec": f"{_THREAD_DENSITY}.spec",
    "thread_bench.models.torch_model": f"{_THREAD_DENSITY}.torch_model",
    "thread_bench.models.transfer": f"{_THREAD_DENSITY}.transfer",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old name as the module it moved to (the same object under both names)."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        return importlib.util.spec_from_loader(fullname, self) if fullname in MOVED_MODULES else None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(MOVED_MODULES[spec.name])

    def exec_module(self, module: ModuleType) -> None:
        """The module was executed under its new name."""

    def get_code(self, fullname: str) -> CodeType | None:
        """The moved module's code, for ``python -m <old name>`` (runpy runs it as ``__main__``)."""
        spec = importlib.util.find_spec(MOVED_MODULES[fullname])
        loader = spec.loader if spec is not None else None
        return loader.get_code(spec.name) if isinstance(loader, importlib.abc.InspectLoader) and spec else None

    def is_package(self, fullname: str) -> bool:
        return False


if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
    sys.meta_path.insert(0, _MovedModules())
