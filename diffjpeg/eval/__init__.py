"""Evaluation: the robustness benchmark, reports, datasets and models that users run (nothing in the
library imports this package).

``run_benchmark(config)`` / ``diffjpeg bench`` is the main job; ``load_dataset`` and ``load_model``
give the data and classifiers it runs on; ``train_small_cnn`` / ``diffjpeg train`` trains the small CNN.
The names load on first use, so ``diffjpeg report`` and the other commands do not pay for the
benchmark's imports (torchattacks, scikit-image).
"""
import importlib

#: public name -> the submodule that defines it
_HOMES = {"run_benchmark": "runner", "BenchConfig": "config", "Dataset": "datasets", "load_dataset": "datasets",
          "train_small_cnn": "train", "LoadedModel": "zoo", "SmallCNN": "zoo", "load_model": "zoo"}

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
