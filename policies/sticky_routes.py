"""Which tree a prompt belongs to, and which engine serves that tree.

A tree's first prompt (its root) is extended by every later prompt of the tree, so "the longest
known root prompt this prompt extends" names the tree without any id from the caller. Two uses
(``SGLangPolicy``): client-side sticky routing over a list of engine URLs (a tree stays on the
engine whose radix cache holds its trunk), and the routing key sent to one URL as
``X-SMG-Routing-Key`` (sglang-router's ``manual`` policy pins each key to a worker).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from .protocol import PolicyError

_MOD = (1 << 61) - 1


def _prefix_hashes(ids: Sequence[int]) -> list[int]:
    """Polynomial hash of every prefix: ``out[k - 1]`` hashes ``ids[:k]``."""
    out, h = [], 0
    for t in ids:
        h = (h * 1_000_003 + int(t) + 1) % _MOD
        out.append(h)
    return out


class StickyRoutes:
    """Prompt -> (URL index, routing key): a prompt follows the longest known root prompt it
    extends; a new root goes to the live URL with the fewest requests in flight (then the
    fewest roots). The oldest roots are forgotten past ``max_roots``."""

    def __init__(self, n_urls: int, max_roots: int = 4096) -> None:
        self.n_urls, self.max_roots = n_urls, max_roots
        self.roots: OrderedDict[tuple[int, int], int] = OrderedDict()
        self.lengths: dict[int, int] = {}  # root length -> how many roots have it
        self.inflight = [0] * n_urls
        self.assigned = [0] * n_urls  # roots given to each URL
        self.down: set[int] = set()

    def route(self, ids: Sequence[int]) -> tuple[int, str]:
        hashes = _prefix_hashes(ids)
        for length in sorted(self.lengths, reverse=True):
            if length <= len(ids):
                key = (length, hashes[length - 1])
                index = self.roots.get(key)
                if index is not None:
                    if index in self.down:
                        index = self._pick()
                        self.roots[key] = index
                    self.roots.move_to_end(key)
                    return index, _routing_key(key)
        index = self._pick()
        key = (len(ids), hashes[-1] if hashes else 0)
        self.roots[key] = index
        self.lengths[key[0]] = self.lengths.get(key[0], 0) + 1
        while len(self.roots) > self.max_roots:
            (old_len, _), _ = self.roots.popitem(last=False)
            self.lengths[old_len] -= 1
            if not self.lengths[old_len]:
                del self.lengths[old_len]
        return index, _routing_key(key)

    def _pick(self) -> int:
        live = [i for i in range(self.n_urls) if i not in self.down]
        if not live:
            raise PolicyError("every SGLang URL is down")
        index = min(live, key=lambda i: (self.inflight[i], self.assigned[i], i))
        self.assigned[index] += 1
        return index


def _routing_key(root: tuple[int, int]) -> str:
    length, digest = root
    return f"{length}-{digest:x}"
