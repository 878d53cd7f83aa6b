"""The radix prefix cache and the KV slot pool, on their own (no model)."""

from __future__ import annotations

import pytest
import torch

from treegym.policies.kv_pool import KVPoolFullError, TokenKVPool
from treegym.policies.radix_cache import RadixCache


def _cache(capacity: int = 64) -> RadixCache:
    return RadixCache(TokenKVPool(capacity, n_layers=1, kv_heads=1, head_dim=2))


def _store(cache: RadixCache, key: list[int]) -> torch.Tensor:
    """Insert ``key`` with freshly allocated slots for its uncached part; return its slots."""
    have, _ = cache.match_prefix(key)
    own = cache.pool.alloc(len(key) - len(have))
    slots = torch.cat([have, own])
    present = cache.insert(key, slots)
    assert present == len(have)
    return slots


def test_a_prefix_is_found_wherever_prompts_diverge():
    cache = _cache()
    a = _store(cache, list(range(1, 11)))
    # same first 9 tokens, another 10th: the whole shared prefix is found, not 0
    slots, _ = cache.match_prefix([*range(1, 10), 99])
    assert slots.tolist() == a[:9].tolist()
    slots, _ = cache.match_prefix([1, 2, 3, 7])
    assert slots.tolist() == a[:3].tolist()
    assert cache.match_prefix([5, 1])[0].numel() == 0


def test_shared_tokens_are_stored_once():
    cache = _cache()
    _store(cache, [1, 2, 3, 4, 5])
    _store(cache, [1, 2, 3, 8, 9])
    _store(cache, [1, 2, 3, 4, 5, 6])
    assert cache.total_size == 8  # 1 2 3 | 4 5 | 6 | 8 9
    assert cache.pool.free_slots == 63 - 8


def test_insert_reports_the_part_already_cached():
    cache = _cache()
    first = _store(cache, [1, 2, 3])
    dup = cache.pool.alloc(4)
    assert cache.insert([1, 2, 3, 4], dup) == 3  # dup[:3] are the caller's to free
    slots, _ = cache.match_prefix([1, 2, 3, 4])
    assert slots.tolist() == [*first.tolist(), dup[3].item()]


def test_locked_prefixes_survive_eviction_and_lru_goes_first():
    cache = _cache()
    _store(cache, [1, 1, 1])
    _store(cache, [2, 2, 2])
    _store(cache, [3, 3, 3])
    _, node = cache.match_prefix([1, 1, 1])  # touched: [2, 2, 2] is now the oldest
    cache.inc_lock_ref(node)
    assert cache.evictable_size == 6 and cache.protected_size == 3
    assert cache.evict(1) == 3
    assert cache.match_prefix([2, 2, 2])[0].numel() == 0
    assert cache.match_prefix([3, 3, 3])[0].numel() == 3
    assert cache.evict(100) == 3  # only the unlocked one is left to evict
    assert cache.match_prefix([1, 1, 1])[0].numel() == 3
    cache.dec_lock_ref(node)
    assert cache.evict(100) == 3 and cache.total_size == 0
    assert cache.pool.free_slots == 63


def test_evicting_a_leaf_keeps_its_parent_prefix_for_others():
    cache = _cache()
    _store(cache, [1, 2, 3, 4])
    _store(cache, [1, 2, 9])
    _, node = cache.match_prefix([1, 2, 9])
    cache.inc_lock_ref(node)
    cache.evict(100)  # [3, 4] goes; [1, 2] is locked through the [9] leaf
    assert cache.match_prefix([1, 2, 3, 4])[0].numel() == 2


def test_reset_frees_everything_and_refuses_while_locked():
    cache = _cache()
    _store(cache, [1, 2, 3])
    _, node = cache.match_prefix([1, 2, 3])
    cache.inc_lock_ref(node)
    with pytest.raises(RuntimeError, match="running requests"):
        cache.reset()
    cache.dec_lock_ref(node)
    cache.reset()
    assert cache.total_size == 0 and cache.pool.free_slots == 63


def test_pool_hands_out_distinct_slots_and_refuses_more_than_it_has():
    pool = TokenKVPool(8, n_layers=2, kv_heads=1, head_dim=2)
    a, b = pool.alloc(3), pool.alloc(4)
    assert len({*a.tolist(), *b.tolist()}) == 7 and 0 not in {*a.tolist(), *b.tolist()}
    with pytest.raises(KVPoolFullError, match="1 KV slots wanted, 0 free"):
        pool.alloc(1)
    pool.free(a)
    keys = torch.arange(6, dtype=torch.float32).view(3, 1, 2)
    pool.write(1, a, keys, -keys)
    k, v = pool.gather(1, a[None, [2, 0]])
    assert k.shape == (1, 1, 2, 2)
    assert k[0, 0].tolist() == [[4.0, 5.0], [0.0, 1.0]] and v[0, 0, 0, 0] == -4.0
