"""A preallocated pool of KV slots: one slot holds one token's keys and values in every layer.

Why token slots (SGLang's ``TokenToKVPool`` with page size 1): a request's KV is then just a
list of slot indices, so any number of requests that share a prefix point at the *same* slots
(no copies), a radix tree can hand out any prefix length (not only block multiples), and a
decode step gathers each row's keys with one ``index_select`` per layer. Memory is reserved
once with ``torch.empty``: the OS maps pages only when a slot is first written, so a large
pool costs nothing until it is used.

Slot 0 is a scratch slot: it is zeroed, never handed out, and padding positions of a batch
point at it (masked out, but finite, so ``0 × value`` can never turn into NaN).
"""

from __future__ import annotations

import torch


class KVPoolFullError(RuntimeError):
    """The pool has fewer free slots than asked for (the engine evicts or waits first)."""


class TokenKVPool:
    """Per-layer ``[capacity, kv_heads, head_dim]`` key and value tensors and a free list."""

    def __init__(
        self,
        capacity: int,
        n_layers: int,
        kv_heads: int,
        head_dim: int,
        *,
        dtype: torch.dtype = torch.float32,
        device: str = "cpu",
    ) -> None:
        if capacity < 2:
            raise ValueError(f"a KV pool needs at least 2 slots, got {capacity}")
        shape = (capacity, kv_heads, head_dim)
        self.keys = [torch.empty(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.values = [torch.empty(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        for t in (*self.keys, *self.values):
            t[0].zero_()
        self.capacity = capacity
        self.device = device
        self.reset()

    def reset(self) -> None:
        """Every slot free again (after a failure that lost track of who held what)."""
        # A stack: recently freed (cache-warm) slots are handed out first.
        self._free = list(range(self.capacity - 1, 0, -1))

    @staticmethod
    def bytes_per_token(n_layers: int, kv_heads: int, head_dim: int, dtype: torch.dtype) -> int:
        return 2 * n_layers * kv_heads * head_dim * torch.empty((), dtype=dtype).element_size()

    @property
    def free_slots(self) -> int:
        return len(self._free)

    def alloc(self, n: int) -> torch.Tensor:
        """``n`` free slot indices (int64); raises :class:`KVPoolFullError` if there are fewer."""
        if n > len(self._free):
            raise KVPoolFullError(f"{n} KV slots wanted, {len(self._free)} free")
        taken = self._free[len(self._free) - n :]
        del self._free[len(self._free) - n :]
        return torch.tensor(taken[::-1], dtype=torch.long, device=self.device)

    def free(self, slots: torch.Tensor) -> None:
        """Return slots to the pool (their contents are garbage from now on)."""
        if slots.numel():
            self._free.extend(slots.tolist())

    def write(self, layer: int, slots: torch.Tensor, keys: torch.Tensor, values: torch.Tensor):
        """Store ``[n, kv_heads, head_dim]`` keys and values of one layer at ``slots``."""
        self.keys[layer].index_copy_(0, slots, keys)
        self.values[layer].index_copy_(0, slots, values)

    def gather(self, layer: int, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values ``[batch, kv_heads, length, head_dim]`` of a ``[batch, length]``
        slot index (the layout attention wants)."""
        b, n = index.shape
        flat = index.reshape(-1)
        k = self.keys[layer].index_select(0, flat).view(b, n, *self.keys[layer].shape[1:])
        v = self.values[layer].index_select(0, flat).view(b, n, *self.values[layer].shape[1:])
        return k.transpose(1, 2), v.transpose(1, 2)
