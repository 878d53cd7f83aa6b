"""A radix-style prefix KV cache: token prefix → the model's key/value tensors for it.

Children of a tree node share the node's whole transcript as their prompt, and the next turn's
prompt extends this turn's prompt + generation. Storing the KV of each prompt and of each
finished generation, keyed by its exact token prefix, lets the local policy compute only the new
tokens of every request — what SGLang's RadixAttention does on a GPU server.

Lookup walks a token trie along the request's ids and returns the deepest stored prefix.
Entries are evicted least-recently-used when their tensors exceed ``max_bytes``. Stored tensors
are never modified (``DynamicCache.update`` concatenates into new tensors), so an entry can be
shared by any number of later requests.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch

KV = tuple[tuple[torch.Tensor, torch.Tensor], ...]
"""Per layer ``(keys, values)``, each ``[1, heads, seq, head_dim]``."""


class _Node:
    __slots__ = ("children", "entry", "parent", "token")

    def __init__(self, parent: _Node | None, token: int) -> None:
        self.children: dict[int, _Node] = {}
        self.entry: _Entry | None = None
        self.parent = parent
        self.token = token


@dataclass
class _Entry:
    node: _Node
    kv: KV
    length: int
    nbytes: int


class PrefixKVCache:
    """LRU map of token prefixes to KV tensors, bounded by ``max_bytes``."""

    def __init__(self, max_bytes: int = 256 << 20) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self.nbytes = 0
        self._root = _Node(None, -1)
        self._lru: OrderedDict[int, _Entry] = OrderedDict()
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._lru)

    def lookup(self, ids: Sequence[int], max_len: int | None = None) -> tuple[int, KV | None]:
        """Longest stored prefix of ``ids`` (at most ``max_len`` tokens): ``(length, kv)``."""
        limit = len(ids) if max_len is None else min(max_len, len(ids))
        node, best = self._root, None
        for i in range(limit):
            node = node.children.get(ids[i])
            if node is None:
                break
            if node.entry is not None:
                best = node.entry
        if best is None:
            self.misses += 1
            return 0, None
        self.hits += 1
        self._lru.move_to_end(id(best))
        return best.length, best.kv

    def insert(self, ids: Sequence[int], kv: KV) -> None:
        """Store ``kv`` (covering exactly ``ids``), then evict down to the byte budget."""
        length = kv[0][0].shape[2]
        if length != len(ids):
            raise ValueError(f"KV covers {length} tokens but the key has {len(ids)}")
        nbytes = sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in kv)
        if nbytes > self.max_bytes:
            return
        node = self._root
        for token in ids:
            child = node.children.get(token)
            if child is None:
                child = node.children[token] = _Node(node, token)
            node = child
        if node.entry is not None:
            self._lru.move_to_end(id(node.entry))
            return
        entry = _Entry(node, kv, length, nbytes)
        node.entry = entry
        self._lru[id(entry)] = entry
        self.nbytes += nbytes
        while self.nbytes > self.max_bytes:
            self._evict(next(iter(self._lru.values())))

    def clear(self) -> None:
        for entry in list(self._lru.values()):
            self._evict(entry)

    def _evict(self, entry: _Entry) -> None:
        del self._lru[id(entry)]
        self.nbytes -= entry.nbytes
        node: _Node | None = entry.node
        node.entry = None
        while (
            node is not None
            and node.parent is not None
            and not node.children
            and node.entry is None
        ):
            del node.parent.children[node.token]
            node = node.parent
