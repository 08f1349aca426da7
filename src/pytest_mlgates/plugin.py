"""pytest hooks only.  Loaded in every pytest run: import nothing heavy here."""

from __future__ import annotations
