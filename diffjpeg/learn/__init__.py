"""Q-table learning: optimise JPEG quantisation tables for a classifier under a bit-rate budget.

- :func:`learn_qtables` / :class:`LearnResult`: gradient descent on a learnable ``DiffJPEG``'s tables.
- :func:`rate_proxy`: differentiable bits-per-pixel estimate; :func:`rate_correlation` validates it
  against the sizes Pillow writes; :func:`real_bpp` measures real files.
- :func:`export_jpeg`, :func:`save_tables`, :func:`load_tables`: integer tables to .jpg and JSON.

Training in general: :mod:`.training` (the one resumable, checkpointed loop every trainer runs on),
:mod:`.classifier` (``train_classifier``, ``cached_classifier``, ``accuracy``) and
:mod:`.reconstruction` (``train_reconstruction``, the network of ``PixelDepthReconstruction``).
"""
from .qtables import (LearnResult, export_jpeg, learn_qtables, load_tables, objective, save_tables,
                      tables_tensor)
from .rate import rate_correlation, rate_proxy, real_bpp, real_scan_bits

__all__ = ["LearnResult", "export_jpeg", "learn_qtables", "load_tables", "objective", "rate_correlation",
           "rate_proxy", "real_bpp", "real_scan_bits", "save_tables", "tables_tensor"]
