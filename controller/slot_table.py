"""The Mux's lookup table of new connections (pure): 65,536 slots, each naming a DIP, that the
datapath indexes with its own hash of the packet, so a new connection costs no upcall.

How the datapath reads it (OVS 3.1, checked on real OVS in tests/ovs): the endpoint's select
group has `selection_method=dp_hash` and exactly BINS buckets of weight 1. The datapath
hashes the packet (hashing.datapath_hash), recirculates, and the group takes bucket
`dp_hash & 0xff`, in the order the group_mod listed them: that bucket is the slot table's
bin. A bin held whole by one DIP is a bucket that sends to that DIP. A bin shared by several
DIPs is a bucket that copies dp_hash's low bits into a register (OVS lets no OpenFlow flow
match dp_hash itself) and resubmits to the split table, whose flows match the bin and the
next eight bits, the bin's sub-slot, with masks (compile_mux.endpoint_selection).

Why positions: a bin's sub-slots are handed out in runs over *positions*, position p holding
sub-slot bitrev8(p). An aligned block of 2^j positions is then exactly the sub-slots whose
low 8-j bits are fixed: one masked match. So a run of any length costs at most 14 flows.

Why a table that remembers (the Manager replicates it, state.py): Maglev's table meets the
evenness and disruption goals with a table of 65,537 entries, but its entries are scattered,
which would cost one flow each. This table is built from the previous one instead
(`next_table`): a DIP that leaves frees its slots; a DIP above its new count gives up the
excess; the DIPs below their count take the free slots, whole bins first. Only the slots
that have to move do, which is the least any scheme can move; and counts are exact (largest
remainder), so a DIP's share is its weight's share to within 1/65,536.
"""

from __future__ import annotations

import bisect
import functools
import json
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

BINS = 256  # the dp_hash group's buckets: OVS 3.1 maps at most 256 hash values to buckets
SUBSLOTS = 256  # per bin, the next 8 bits of dp_hash
SLOTS = BINS * SUBSLOTS
BIN_MASK, SUB_SHIFT = 0xFF, 8

Run = tuple[str, int]  # (DIP, number of consecutive positions)
Bin = tuple[Run, ...]  # runs covering the bin's SUBSLOTS positions, in order


def bitrev8(x: int) -> int:
    return int(f"{x:08b}"[::-1], 2)


class SlotTable:
    """bins[i]: the runs of bin i (immutable). Compared by content and hashed once, lazily
    (a table is a cache key of the compiler on every config write). Its JSON form (Raft
    snapshots) is made once; a table restored from it is decoded when first read, so a
    replica restoring 10k endpoints' tables does not decode them all."""

    __slots__ = ("_bins", "_counts_", "_hash", "_encoded")

    def __init__(self, bins: tuple[Bin, ...] | None = None,
                 counts: tuple[tuple[str, int], ...] | None = None, encoded: str | None = None):
        """From `bins` (checked), `bins` and `counts` (sorted; only from code that built both,
        unchecked), or `encoded` (what `encoded()` returned, trusted, decoded when read)."""
        if bins is not None and counts is None:
            if len(bins) != BINS or any(sum(n for _, n in b) != SUBSLOTS for b in bins):
                raise ValueError("a slot table has 256 bins of 256 sub-slots")
            total: dict[str, int] = {}
            for b in bins:
                for dip, n in b:
                    total[dip] = total.get(dip, 0) + n
            counts = tuple(sorted(total.items()))
        if bins is None and encoded is None:
            raise ValueError("a slot table needs its bins or its encoded form")
        self._bins, self._counts_, self._encoded = bins, counts, encoded
        self._hash: int | None = None

    def _decode(self) -> None:
        assert self._encoded is not None
        table = decode(json.loads(self._encoded))
        self._bins, self._counts_ = table._bins, table._counts_

    @property
    def bins(self) -> tuple[Bin, ...]:
        if self._bins is None:
            self._decode()
        assert self._bins is not None
        return self._bins

    @property
    def _counts(self) -> tuple[tuple[str, int], ...]:
        if self._counts_ is None:
            self._decode()
        assert self._counts_ is not None
        return self._counts_

    def encoded(self) -> str:
        """Compact JSON of `encode(self)`, made once."""
        if self._encoded is None:
            self._encoded = json.dumps(encode(self), separators=(",", ":"))
        return self._encoded

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(self.bins)
        return self._hash

    def __eq__(self, other: object) -> bool:
        return (self is other or isinstance(other, SlotTable)
                and self._counts == other._counts and self.bins == other.bins)

    def __reduce__(self) -> tuple[Any, ...]:
        return (SlotTable, (None, None, self.encoded()))

    def counts(self) -> dict[str, int]:
        """Each DIP's number of slots."""
        return dict(self._counts)

    def dips(self) -> tuple[str, ...]:
        """The DIPs with slots, sorted."""
        return tuple(dip for dip, _ in self._counts)

    def dip_at(self, dp_hash: int) -> str:
        """The DIP of the slot a packet with this dp_hash lands in (the oracle's last step)."""
        position = bitrev8((dp_hash >> SUB_SHIFT) & 0xFF)
        for dip, n in self.bins[dp_hash & BIN_MASK]:
            if position < n:
                return dip
            position -= n
        raise AssertionError("unreachable: runs cover the bin")

    def whole_owner(self, index: int) -> str | None:
        """The DIP holding bin `index` whole, None for a split bin."""
        b = self.bins[index]
        return b[0][0] if len(b) == 1 else None

    def expanded(self) -> list[str]:
        """Every slot's DIP, indexed by dp_hash & 0xffff (for tests and bench/)."""
        out = [""] * SLOTS
        for i, b in enumerate(self.bins):
            position = 0
            for dip, n in b:
                for p in range(position, position + n):
                    out[i | bitrev8(p) << SUB_SHIFT] = dip
                position += n
        return out


@functools.lru_cache(maxsize=1 << 16)
def _whole(dip: str) -> Bin:
    """The bin a DIP holds whole (one object per DIP: a Manager keeps thousands of tables)."""
    return ((dip, SUBSLOTS),)


def encode(table: SlotTable) -> dict[str, Any]:
    """The table as JSON-ready data (Raft snapshots): its DIPs, each bin's DIP index (-1
    for a split bin), and each split bin's runs as flat [index, length, ...] lists."""
    dips = [dip for dip, _ in table._counts]
    index = {dip: i for i, dip in enumerate(dips)}
    whole = [index[b[0][0]] if len(b) == 1 else -1 for b in table.bins]
    split = {str(i): [x for dip, n in b for x in (index[dip], n)]
             for i, b in enumerate(table.bins) if len(b) > 1}
    return {"dips": dips, "whole": whole, "split": split}


def decode(data: Mapping[str, Any]) -> SlotTable:
    dips, split = data["dips"], data["split"]
    whole = [_whole(d) for d in dips]
    counts = Counter(data["whole"])
    bins = [whole[w] if w >= 0 else () for w in data["whole"]]
    total = {d: counts.get(i, 0) * SUBSLOTS for i, d in enumerate(dips)}
    for i, flat in split.items():
        runs = tuple((dips[flat[k]], flat[k + 1]) for k in range(0, len(flat), 2))
        bins[int(i)] = runs
        for dip, n in runs:
            total[dip] += n
    # trusted: a snapshot holds what this code built (restoring 10k tables must be quick)
    return SlotTable(tuple(bins), tuple(sorted(total.items())))


def slot_counts(weights: Mapping[str, int]) -> dict[str, int]:
    """Each backend's number of slots: its share of the weight, by largest remainder (exact
    to within one slot); a backend with weight > 0 gets at least one. {} without weight."""
    live = {k: w for k, w in weights.items() if w > 0}
    total = sum(live.values())
    if not total:
        return {}
    quotas = {k: w * SLOTS / total for k, w in live.items()}
    counts = {k: int(q) for k, q in quotas.items()}
    spare = SLOTS - sum(counts.values())
    for k in sorted(quotas, key=lambda k: (counts[k] - quotas[k], k))[:spare]:
        counts[k] += 1
    for k in sorted(k for k, c in counts.items() if c == 0):
        counts[max(counts, key=lambda d: (counts[d], d))] -= 1
        counts[k] = 1
    return counts


def block_matches(bin_index: int, start: int, length: int) -> Iterator[tuple[int, int]]:
    """(value, mask) over dp_hash's low 16 bits for each aligned block of positions
    [start, start+length) of a bin: the masked matches that cover exactly that run's
    sub-slots."""
    position, end = start, start + length
    while position < end:
        size = position & -position if position else SUBSLOTS
        while position + size > end:
            size //= 2
        fixed_bits = 8 - size.bit_length() + 1  # the low bits of the sub-slot a block fixes
        yield (bin_index | bitrev8(position) << SUB_SHIFT,
               BIN_MASK | ((1 << fixed_bits) - 1) << SUB_SHIFT)
        position += size


# --- building the next table from the last -------------------------------------------------

@dataclass
class _Piece:  # a run of a bin being rebuilt; owner None: free
    owner: str | None
    n: int


def next_table(old: SlotTable | None, counts: Mapping[str, int]) -> SlotTable | None:
    """The table giving each DIP exactly counts[DIP] slots, moving as few slots of `old` as
    can be (None: no DIP takes new connections)."""
    if not counts:
        return None
    if sum(counts.values()) != SLOTS or min(counts.values()) < 1:
        raise ValueError("counts must be positive and add up to the number of slots")
    if old is not None and old._counts == tuple(sorted(counts.items())):
        return old
    rebuild = _Rebuild([[_Piece(dip if dip in counts else None, n) for dip, n in b]
                        for b in old.bins] if old is not None
                       else [[_Piece(None, SUBSLOTS)] for _ in range(BINS)])
    have = dict.fromkeys(counts, 0)
    for b in rebuild.bins:
        for piece in b:
            if piece.owner is not None:
                have[piece.owner] += piece.n
    for dip in sorted(counts):
        if have[dip] > counts[dip]:
            _give_up(rebuild, dip, have[dip] - counts[dip])
    _fill(rebuild, {d: counts[d] - have[d] for d in sorted(counts) if counts[d] > have[d]})
    table = SlotTable(tuple(_merged(b) for b in rebuild.bins))
    table.encoded()  # now, once (50 us), rather than all together in the next Raft snapshot
    return table


class _Rebuild:
    """The bins of a table being rebuilt, the bins each owner (None: free) has a piece in,
    the free runs in order of (size, bin, index in bin), and the free runs beside each
    owner's runs, all kept up to date by `replace`: giving up and filling look at those
    alone. Scanning all 256 bins for every piece taken made one weight change among 100
    backends cost ~50 ms, on every replica. The choices are the same either way (a test
    pins them)."""

    def __init__(self, bins: list[list[_Piece]]):
        self.bins = bins
        self.where: dict[str | None, set[int]] = {}
        self.gaps: list[tuple[int, int, int]] = []
        self.beside: dict[str, set[tuple[int, int, int]]] = {}
        for i, b in enumerate(bins):
            for piece in b:
                self.where.setdefault(piece.owner, set()).add(i)
            self._index(i, add=True, sort=False)
        self.gaps.sort()

    def _index(self, i: int, add: bool, sort: bool = True) -> None:
        """Add (or remove) bin i's free runs to (from) `gaps` and `beside`."""
        b = self.bins[i]
        for j, p in enumerate(b):
            if p.owner is not None:
                continue
            gap = (p.n, i, j)
            neighbours = {b[k].owner for k in (j - 1, j + 1) if 0 <= k < len(b)} - {None}
            if add:
                if sort:
                    bisect.insort(self.gaps, gap)
                else:
                    self.gaps.append(gap)
                for owner in neighbours:
                    self.beside.setdefault(str(owner), set()).add(gap)
            else:
                del self.gaps[bisect.bisect_left(self.gaps, gap)]
                for owner in neighbours:
                    self.beside[str(owner)].discard(gap)

    def bins_of(self, owner: str | None, reverse: bool = False) -> list[int]:
        return sorted(self.where.get(owner, ()), reverse=reverse)

    def replace(self, i: int, j: int, pieces: list[_Piece]) -> None:
        """Piece j of bin i becomes `pieces`."""
        b = self.bins[i]
        before = {p.owner for p in b}
        self._index(i, add=False)
        b[j:j + 1] = pieces
        self._index(i, add=True)
        after = {p.owner for p in b}
        for owner in before - after:
            self.where[owner].discard(i)
        for owner in after - before:
            self.where.setdefault(owner, set()).add(i)

    def gap_for(self, dip: str, need: int) -> tuple[int, int, int]:
        """The free run (size, bin, index) `dip` takes from next: one that holds `need`,
        next to a run of its own (the two merge), then an exact fit, then the smallest, the
        first bin first; when none holds it, the largest."""
        beside_own = [(n != need, n, i, j) for n, i, j in self.beside.get(dip, ()) if n >= need]
        if beside_own:
            _, n, i, j = min(beside_own)
            return n, i, j
        k = bisect.bisect_left(self.gaps, (need, -1, -1))
        if k < len(self.gaps):
            return self.gaps[k]
        return self.gaps[bisect.bisect_left(self.gaps, (self.gaps[-1][0], -1, -1))]


def _merged(b: list[_Piece]) -> Bin:
    out: list[_Piece] = []
    for piece in b:
        assert piece.owner is not None, "every free slot was given out"
        if out and out[-1].owner == piece.owner:
            out[-1].n += piece.n
        else:
            out.append(_Piece(piece.owner, piece.n))
    if len(out) == 1:
        return _whole(str(out[0].owner))
    return tuple((str(p.owner), p.n) for p in out)


def _is_whole(b: list[_Piece], owner: str | None) -> bool:
    return len(b) == 1 and b[0].owner == owner


def _give_up(rebuild: _Rebuild, dip: str, excess: int) -> None:
    """Free `excess` of the DIP's slots: its pieces of split bins first (smallest first, from
    their ends), then its whole bins from the last, the final one from its end."""
    bins = rebuild.bins
    pieces = sorted(((p.n, i, j) for i in rebuild.bins_of(dip) if len(bins[i]) > 1
                     for j, p in enumerate(bins[i]) if p.owner == dip),
                    key=lambda t: (t[0], t[1]))
    wholes = [(SUBSLOTS, i, 0) for i in rebuild.bins_of(dip, reverse=True)
              if _is_whole(bins[i], dip)]
    for n, i, j in pieces + wholes:  # only the last one taken from splits: the j stay right
        take = min(n, excess)
        rebuild.replace(i, j, [_Piece(dip, n - take), _Piece(None, take)] if take < n
                        else [_Piece(None, n)])
        excess -= take
        if excess == 0:
            return


def _fill(rebuild: _Rebuild, needs: dict[str, int]) -> None:
    """Give each DIP its need from the free slots: whole free bins while it needs a bin or
    more; then a free run that holds the rest, preferring one next to a run of its own (the
    two merge: one run fewer to match), then an exact fit, then the smallest; when none
    holds it, the largest, and again."""
    bins = rebuild.bins
    free_bins = [i for i in rebuild.bins_of(None) if _is_whole(bins[i], None)]
    for dip in needs:
        while needs[dip] >= SUBSLOTS and free_bins:
            rebuild.replace(free_bins.pop(0), 0, [_Piece(dip, SUBSLOTS)])
            needs[dip] -= SUBSLOTS
    for dip in needs:
        while needs[dip] > 0:
            need = needs[dip]
            n, i, j = rebuild.gap_for(dip, need)
            b = bins[i]
            after_own = j > 0 and b[j - 1].owner == dip
            before_own = j + 1 < len(b) and b[j + 1].owner == dip
            take = min(n, need)
            if take == n:
                rebuild.replace(i, j, [_Piece(dip, n)])
            elif before_own and not after_own:  # take the end that touches its own run
                rebuild.replace(i, j, [_Piece(None, n - take), _Piece(dip, take)])
            else:
                rebuild.replace(i, j, [_Piece(dip, take), _Piece(None, n - take)])
            needs[dip] -= take
