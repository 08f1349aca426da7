"""Bounded in-process caches: the checkpoints loaded, and the models built from them.

Two criteria on one checkpoint load it once and build its model once; a session that
judges many runs, or runs of many large checkpoints, does not hold all of them at once (a
loaded checkpoint takes about its file's size in memory).  :class:`BytesLRU` keeps the
most recently used entries up to a byte budget, and always the newest entry whatever its
size (the next criterion is most likely on the same file)::

    >>> cache = BytesLRU(budget=100)
    >>> cache.put("a", "A", 60); cache.put("b", "B", 60)   # a is evicted: 120 > 100
    >>> cache.get("a") is None, cache.get("b")
    (True, 'B')
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

__all__ = ["CACHE_BUDGET_BYTES", "CHECKPOINTS", "MODELS", "BytesLRU"]

#: What the checkpoint cache and the model cache may each hold: 2 GiB.  A larger
#: checkpoint is still kept while it is the newest entry.
CACHE_BUDGET_BYTES = 2 * 1024**3


class BytesLRU:
    """A least-recently-used cache bounded by the bytes its entries say they take."""

    def __init__(self, budget: int = CACHE_BUDGET_BYTES) -> None:
        self.budget = budget
        self._entries: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self.total = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable) -> Any:
        """The value cached under ``key`` (now the most recently used), or None."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry[0]

    def put(self, key: Hashable, value: Any, size: int) -> None:
        """Cache ``value`` as taking ``size`` bytes; evict the least recently used entries
        while the total is over the budget (never the one just put)."""
        old = self._entries.pop(key, None)
        if old is not None:
            self.total -= old[1]
        size = max(int(size), 0)
        self._entries[key] = (value, size)
        self.total += size
        while self.total > self.budget and len(self._entries) > 1:
            _, (_, evicted) = self._entries.popitem(last=False)
            self.total -= evicted

    def clear(self) -> None:
        self._entries.clear()
        self.total = 0


#: Loaded checkpoint dicts by (path, mtime_ns, size): ``checkpoint_io.load_checkpoint_file``.
CHECKPOINTS = BytesLRU()
#: Models built by a gate file's ``model:`` class, with a checkpoint's weights loaded:
#: ``models.model_from_target``.
MODELS = BytesLRU()
