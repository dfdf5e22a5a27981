"""The `sim` engine's prefix cache: KV blocks of recent prompts kept by hash, least recently used out.

As vLLM's automatic prefix caching: a finished prefill leaves its full blocks in the cache; a new prompt
whose leading block hashes are cached skips their prefill. The cache holds at most `capacity` blocks
(the engine's KV cache size: blocks in use by running requests and cached ones share that memory, and
cached ones are evicted first; modelled here as one LRU bounded by the whole cache). A finished answer's
blocks are cached too (vLLM caches decoded blocks), so a next turn that resends the answer verbatim hits
them; a real chat template may re-tokenize the answer differently, which costs a few blocks there.
"""

from __future__ import annotations

from collections import OrderedDict

from wwwserve.protocol.prefix import CHECKPOINT, FILTER_ENTRIES, PrefixFilter


class PrefixCache:
    """Block hash -> position in its chain, in least-recently-used order."""

    def __init__(self, capacity_blocks: int) -> None:
        self.capacity = capacity_blocks
        self._blocks: OrderedDict[int, int] = OrderedDict()
        self.version = 0  # bumps on every insert: the advertised filter is rebuilt only then
        self._filter: tuple[int, PrefixFilter] | None = None

    def __len__(self) -> int:
        return len(self._blocks)

    def match(self, hashes: list[int]) -> int:
        """How many leading blocks of `hashes` are cached (and mark them used)."""
        n = 0
        for h in hashes:
            if h not in self._blocks:
                break
            self._blocks.move_to_end(h)
            n += 1
        return n

    def insert(self, hashes: list[int]) -> None:
        """A prefill finished: its blocks are cached (most recent last); evict beyond capacity."""
        if self.capacity <= 0 or not hashes:
            return
        for i, h in enumerate(hashes):
            self._blocks[h] = i
            self._blocks.move_to_end(h)
        while len(self._blocks) > self.capacity:
            self._blocks.popitem(last=False)
        self.version += 1

    def advertised(self) -> PrefixFilter:
        """The filter of the most recently used checkpoint blocks (rebuilt only after a change)."""
        if self._filter is not None and self._filter[0] == self.version:
            return self._filter[1]
        picked: list[int] = []
        for h, pos in reversed(self._blocks.items()):
            if pos % CHECKPOINT == CHECKPOINT - 1:
                picked.append(h)
                if len(picked) >= FILTER_ENTRIES:
                    break
        f = PrefixFilter.of(picked)
        self._filter = (self.version, f)
        return f
