"""``python -m diffjpeg.eval`` runs ``diffjpeg bench``; the entry point for ``torchrun``::

    torchrun --nproc-per-node 4 -m diffjpeg.eval --config bench.toml
"""
import sys

from .bench import main

sys.exit(main())
