"""A radix tree from token prefixes to KV slots, after SGLang's RadixAttention cache.

Same semantics as SGLang's ``python/sglang/srt/mem_cache/radix_cache.py`` with page size 1:
an edge holds a run of token ids and the KV slots that hold those tokens' keys and values;
:meth:`match_prefix` returns the slots of the longest cached prefix of *any* prompt (it splits
an edge where two prompts diverge, so a prefix shared by two requests that differ only in the
last token is found whole); :meth:`insert` adds a sequence and reports how much of it was
already there (the caller frees its duplicate slots); nodes that a running request uses are
locked (``lock_ref`` counts on the path to the root) and only unlocked leaves are evicted, least
recently used first. The tree owns the slots it holds; :meth:`evict` returns them to the pool.

Why a radix tree and not a map of stored prompts: tree rollouts send many prompts that share a
trunk and part ways anywhere (siblings, segment boundaries, retries). Keeping each token once
and matching at token granularity makes the computed prompt tokens equal the trees' unique
tokens, which is the whole point of sharing prefixes.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Sequence

import torch

from .kv_pool import TokenKVPool


class RadixNode:
    __slots__ = ("children", "key", "last_access", "lock_ref", "parent", "value")

    def __init__(self, parent: RadixNode | None, key: tuple[int, ...], value: torch.Tensor):
        self.parent = parent
        self.key = key
        self.value = value  # slots of ``key``'s tokens, same length
        self.children: dict[int, RadixNode] = {}
        self.lock_ref = 0
        self.last_access = time.monotonic()


class RadixCache:
    """Token-level prefix cache over the slots of a :class:`TokenKVPool`."""

    def __init__(self, pool: TokenKVPool) -> None:
        self.pool = pool
        self._tick = itertools.count()
        self.reset()

    def reset(self) -> None:
        """Forget every cached prefix and free its slots (locked paths must not exist)."""
        root = getattr(self, "root", None)
        if root is not None:
            stack = list(root.children.values())
            while stack:
                node = stack.pop()
                if node.lock_ref:
                    raise RuntimeError("cannot reset a radix cache that running requests use")
                self.pool.free(node.value)
                stack.extend(node.children.values())
        self.root = RadixNode(None, (), torch.empty(0, dtype=torch.long))
        self.root.lock_ref = 1  # never evicted
        self.evictable_size = 0  # tokens in unlocked nodes
        self.protected_size = 0  # tokens in locked nodes

    @property
    def total_size(self) -> int:
        return self.evictable_size + self.protected_size

    # ------------------------------------------------------------------ lookup
    def match_prefix(self, key: Sequence[int]) -> tuple[torch.Tensor, RadixNode]:
        """Slots of the longest cached prefix of ``key`` and the node where it ends."""
        node, parts, i = self.root, [], 0
        now = time.monotonic()
        while i < len(key):
            child = node.children.get(key[i])
            if child is None:
                break
            n = _common_length(child.key, key, i)
            child.last_access = now
            if n < len(child.key):
                child = self._split(child, n)
            parts.append(child.value)
            node, i = child, i + n
        slots = torch.cat(parts) if parts else torch.empty(0, dtype=torch.long)
        return slots, node

    # ------------------------------------------------------------------ insert
    def insert(self, key: Sequence[int], value: torch.Tensor) -> int:
        """Cache ``key`` with its ``value`` slots; return how many leading tokens were already
        cached (their slots in ``value`` are duplicates the caller still owns and must free)."""
        node, i, now = self.root, 0, time.monotonic()
        key = tuple(key)
        while i < len(key):
            child = node.children.get(key[i])
            if child is None:
                new = RadixNode(node, key[i:], value[i:].clone())
                node.children[key[i]] = new
                self.evictable_size += len(new.key)
                return i
            n = _common_length(child.key, key, i)
            child.last_access = now
            if n < len(child.key):
                child = self._split(child, n)
            node, i = child, i + n
        return i

    def _split(self, child: RadixNode, n: int) -> RadixNode:
        """Cut ``child``'s edge after ``n`` tokens; return the new upper node."""
        upper = RadixNode(child.parent, child.key[:n], child.value[:n])
        upper.lock_ref, upper.last_access = child.lock_ref, child.last_access
        child.parent.children[child.key[0]] = upper
        child.key, child.value = child.key[n:], child.value[n:]
        child.parent = upper
        upper.children[child.key[0]] = child
        return upper

    # ------------------------------------------------------------------ locks
    def inc_lock_ref(self, node: RadixNode) -> None:
        """Protect ``node`` and its ancestors from eviction (a running request uses them)."""
        while node is not self.root:
            if node.lock_ref == 0:
                self.evictable_size -= len(node.key)
                self.protected_size += len(node.key)
            node.lock_ref += 1
            node = node.parent

    def dec_lock_ref(self, node: RadixNode) -> None:
        while node is not self.root:
            if node.lock_ref == 1:
                self.evictable_size += len(node.key)
                self.protected_size -= len(node.key)
            node.lock_ref -= 1
            node = node.parent

    # ------------------------------------------------------------------ eviction
    def evict(self, n_tokens: int) -> int:
        """Free at least ``n_tokens`` slots from unlocked leaves, least recently used first
        (fewer if not enough are evictable); return how many were freed."""
        heap = [(leaf.last_access, next(self._tick), leaf) for leaf in self._evictable_leaves()]
        heapq.heapify(heap)
        freed = 0
        while freed < n_tokens and heap:
            _, _, leaf = heapq.heappop(heap)
            self.pool.free(leaf.value)
            freed += len(leaf.key)
            self.evictable_size -= len(leaf.key)
            parent = leaf.parent
            del parent.children[leaf.key[0]]
            if parent is not self.root and not parent.children and parent.lock_ref == 0:
                heapq.heappush(heap, (parent.last_access, next(self._tick), parent))
        return freed

    def _evictable_leaves(self) -> list[RadixNode]:
        out, stack = [], list(self.root.children.values())
        while stack:
            node = stack.pop()
            if node.children:
                stack.extend(node.children.values())
            elif node.lock_ref == 0:
                out.append(node)
        return out


def _common_length(edge: tuple[int, ...], key: Sequence[int], start: int) -> int:
    n, limit = 0, min(len(edge), len(key) - start)
    while n < limit and edge[n] == key[start + n]:
        n += 1
    return n
