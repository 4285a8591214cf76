"""Tile binning of one strip on the device, in five launches and no host synchronisation:

1. `_rect_kernel`: per Gaussian its tile rectangle and pair count (0 if it has more than
   `max_tiles` tiles: those go to the "big list", scanned by every tile they touch);
2. `torch.cumsum` of the counts (pairs, big, pair-eligible: one [N, 3] op);
3. `_fill_kernel`: per pair slot its (tile, Gaussian), Gaussian-major;
4. `torch.sort(stable=True)` by tile: each tile's pairs stay in increasing Gaussian index;
5. `_ranges_kernel`: the sorted pairs' Gaussians, each tile's [start, end) and the big list.

The pair buffer has a capacity fixed by the shapes, never by the data (pair_capacity or
PAIRS_PER_GAUSSIAN*N + PAIRS_PER_TILE*tiles): a Gaussian whose pairs end past it goes to
the big list too, so the result is exact for any input, memory is O(N + tiles) per strip,
and an undersized capacity only costs speed. Every shape depends only on N, the strip and
the capacity, so a render can be captured in a CUDA graph.

Exact mode (`exact_chunks`): every drawn Gaussian goes into the pairs, and the Gaussians are
cut into consecutive chunks of at most EXACT_PAIR_CHUNK pairs (one host read per chunk; one
chunk unless a crafted file asks for more), which the exact kernel sums one after the
other, so that memory is bounded and each pixel still sums in increasing Gaussian index.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from . import kernels as K

PAIRS_PER_GAUSSIAN = 16          # default pair capacity = 16*N + 16*tiles
PAIRS_PER_TILE = 16
MAX_TILES_PER_GAUSSIAN = 64      # more tiles than this: big list instead of pairs
EXACT_PAIR_CHUNK = 1 << 22       # pairs per exact chunk: about 100 MB of binning buffers


class Binning(NamedTuple):
    rect: torch.Tensor        # [N, 4] int32 tile rectangle (tx0, tx1, ty0, ty1) in the strip;
    #                           empty (tx1 < tx0) where the Gaussian draws nothing here
    cum: torch.Tensor         # [N, 3] int64 inclusive sums of (pairs, big, pair-eligible)
    rows: torch.Tensor        # [N, 2] float64 the spec's candidate rows (exact kernel)
    pair_gid: torch.Tensor    # [P] int32 Gaussian of each pair, sorted by tile (stable)
    pair_tile: torch.Tensor   # [P] int32 sorted tile ids; tiles (= T) marks unused slots
    perm: torch.Tensor        # [P] int64 slot (Gaussian-major) of each sorted pair
    tile_start: torch.Tensor  # [T + 1] int32: tile t's pairs are [tile_start[t], [t+1])
    big_ids: torch.Tensor     # [N] int32: first n_big entries = Gaussians not in the pairs
    big_pos: torch.Tensor     # [N] int32 position of a Gaussian in big_ids, else -1
    n_big: torch.Tensor       # [1] int32
    capacity: int             # P
    tiles_x: int
    tiles_y: int

    @property
    def total_pairs(self) -> torch.Tensor:
        """[] int64: the pairs the pair-eligible Gaussians asked for (device)."""
        return self.cum[-1, 0] if self.cum.shape[0] else self.cum.new_zeros(())

    @property
    def overflow(self) -> torch.Tensor:
        """[] bool: total_pairs > capacity (speed only, not correctness; device)."""
        return self.total_pairs > self.capacity

    @property
    def count(self) -> torch.Tensor:
        """[N] int64 tiles in each rectangle."""
        r = self.rect.to(torch.int64)
        return ((r[:, 1] - r[:, 0] + 1) * (r[:, 3] - r[:, 2] + 1)).clamp(min=0)


def default_capacity(n: int, tiles: int) -> int:
    return max(1, PAIRS_PER_GAUSSIAN * n + PAIRS_PER_TILE * tiles)


def _steps(n: int) -> int:
    """Iterations of a binary search over n + 1 positions."""
    return max(1, int(n).bit_length() + 1)


def _grid(n: int, block: int = K.BIN_BLOCK):
    return (max(1, -(-int(n) // block)),)


def rectangles(means, conics, row0: int, strip_h: int, width: int, *, max_tiles: int,
               shift=(0.0, 0.0)):
    """Launches 1-2: (rect [N, 4] int32, cum [N, 3] int64, rows [N, 2] float64 (the spec's
    candidate rows), tiles_x, tiles_y)."""
    n = means.shape[0]
    tiles_x = -(-width // K.TILE)
    tiles_y = -(-strip_h // K.TILE)
    rect = torch.empty((n, 4), dtype=torch.int32, device=means.device)
    cnt = torch.empty((n, 3), dtype=torch.int64, device=means.device)
    rows = torch.empty((n, 2), dtype=torch.float64, device=means.device)
    K.launch(K._rect_kernel, _grid(n), means, conics, rect, cnt, rows, n, float(shift[0]),
             float(shift[1]), width, strip_h, row0, tiles_x, int(max_tiles),
             BLOCK=K.BIN_BLOCK)
    return rect, torch.cumsum(cnt, dim=0), rows, tiles_x, tiles_y


def pairs(rect, cum, rows, tiles_x: int, tiles_y: int, capacity: int, *, g0: int = 0,
          g1: int | None = None, base: int = 0, big: bool = True) -> Binning:
    """Launches 3-5 for the Gaussians [g0, g1), whose pairs are the slots
    [base, base + capacity) of cum[:, 0]."""
    dev = rect.device
    n = rect.shape[0]
    g1 = n if g1 is None else g1
    T = tiles_x * tiles_y
    P = max(1, int(capacity))
    keys = torch.empty(P, dtype=torch.int32, device=dev)
    vals = torch.empty(P, dtype=torch.int32, device=dev)
    K.launch(K._fill_kernel, _grid(P, K.SLOT_BLOCK), cum, rect, keys, vals, g0, g1, base, P,
             tiles_x, T, _steps(g1 - g0), BLOCK=K.SLOT_BLOCK)
    pair_tile, perm = torch.sort(keys, stable=True)          # ties keep Gaussian order
    pair_gid = torch.empty(P, dtype=torch.int32, device=dev)
    tile_start = torch.empty(T + 1, dtype=torch.int32, device=dev)
    big_ids = torch.empty(max(n, 1) if big else 1, dtype=torch.int32, device=dev)
    big_pos = torch.empty(max(n, 1) if big else 1, dtype=torch.int32, device=dev)
    n_big = torch.zeros(1, dtype=torch.int32, device=dev) if not big or n == 0 else \
        torch.empty(1, dtype=torch.int32, device=dev)
    work = max(P, T + 1, n if big else 0)
    K.launch(K._ranges_kernel, _grid(work, K.SLOT_BLOCK), pair_tile, perm, vals, pair_gid,
             tile_start, cum, big_ids, big_pos, n_big, P, T, n, _steps(P), _steps(n), P + base,
             BLOCK=K.SLOT_BLOCK, BIG=bool(big and n > 0))
    return Binning(rect, cum, rows, pair_gid, pair_tile, perm, tile_start, big_ids, big_pos,
                   n_big, P, tiles_x, tiles_y)


def bin_gaussians(means: torch.Tensor, conics: torch.Tensor, row0: int, strip_h: int,
                  width: int, *, pair_capacity: int | None = None,
                  max_tiles: int = MAX_TILES_PER_GAUSSIAN) -> Binning:
    """Bin N Gaussians (float32, contiguous, on the backend's device) into the 16x16 tiles
    of rows [row0, row0 + strip_h) of a `width`-wide image, in five launches, sync-free."""
    n = means.shape[0]
    rect, cum, rows, tiles_x, tiles_y = rectangles(means, conics, row0, strip_h, width,
                                                   max_tiles=max_tiles)
    cap = int(pair_capacity) if pair_capacity is not None \
        else default_capacity(n, tiles_x * tiles_y)
    return pairs(rect, cum, rows, tiles_x, tiles_y, cap)


def exact_chunks(means: torch.Tensor, conics: torch.Tensor, row0: int, strip_h: int,
                 width: int, shift=(0.0, 0.0), chunk: int = EXACT_PAIR_CHUNK):
    """Yield the Binning of each chunk of consecutive Gaussians (in index order) with at
    most max(chunk, tiles) pairs, every drawn Gaussian in the pairs (spec 10.2: its box,
    widened, holds all its candidate pixels). One host read per chunk."""
    n = means.shape[0]
    tiles_x = -(-width // K.TILE)
    T = tiles_x * (-(-strip_h // K.TILE))
    rect, cum, rows, tiles_x, tiles_y = rectangles(means, conics, row0, strip_h, width,
                                                   max_tiles=T, shift=shift)
    if n == 0:
        return
    cap = max(int(chunk), T)          # a Gaussian has at most T pairs
    ends = cum[:, 0]
    total = int(ends[-1])             # the host read
    g0, base = 0, 0
    while base < total:
        if total - base <= cap:
            g1, end = n, total
        else:
            lim = torch.tensor([base + cap], dtype=torch.int64, device=ends.device)
            g1 = int(torch.searchsorted(ends.contiguous(), lim, right=True))
            end = int(ends[g1 - 1])
        yield pairs(rect, cum, rows, tiles_x, tiles_y, end - base, g0=g0, g1=g1, base=base,
                    big=False)
        g0, base = g1, end
