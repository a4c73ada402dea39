"""Evaluation: the robustness benchmark, reports, datasets and models that users run (nothing in the
library imports this package).

``run_benchmark(config)`` / ``diffjpeg bench`` is the main job; ``load_dataset`` and ``load_model``
give the data and classifiers it runs on; ``train_small_cnn`` / ``diffjpeg train`` trains the small CNN.
"""
from .bench import run_benchmark
from .config import BenchConfig
from .datasets import Dataset, load_dataset
from .train import train_small_cnn
from .zoo import LoadedModel, SmallCNN, load_model

__all__ = ["BenchConfig", "Dataset", "LoadedModel", "SmallCNN", "load_dataset", "load_model", "run_benchmark",
           "train_small_cnn"]
