"""pytest-mlgates: the exit criteria of ML training runs, as pytest items.

This module is imported by pytest's entry point machinery in every pytest run of a user's
environment, so it imports nothing heavy: public names resolve lazily.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
