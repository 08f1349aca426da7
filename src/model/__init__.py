"""model: a plain PyTorch training engine that writes run dirs pytest-mlgates reads.

Start with ``python -m model train --config configs/default.yaml``; the whole story of a
run is ``model.train.train``.
"""

__version__ = "0.1.0"
