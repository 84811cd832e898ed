"""Sets of sequence numbers as ranges: a node's stored seqs are one long run with few holes."""

from __future__ import annotations

from bisect import bisect_left, bisect_right


class SeqRanges:
    """A set of integers kept as sorted, disjoint, non-adjacent closed ranges."""

    def __init__(self) -> None:
        self._lo: list[int] = []
        self._hi: list[int] = []

    def __len__(self) -> int:
        return len(self._lo)

    def __contains__(self, seq: int) -> bool:
        i = bisect_right(self._lo, seq) - 1
        return i >= 0 and self._hi[i] >= seq

    @property
    def max(self) -> int | None:
        return self._hi[-1] if self._hi else None

    def ranges(self) -> list[tuple[int, int]]:
        return list(zip(self._lo, self._hi, strict=True))

    def add(self, seq: int) -> bool:
        """Add one; False if it was there already."""
        if self._hi and seq == self._hi[-1] + 1:  # the usual case: the next seq in order
            self._hi[-1] = seq
            return True
        if seq in self:
            return False
        self.add_range(seq, seq)
        return True

    def add_range(self, lo: int, hi: int) -> None:
        i = bisect_left(self._hi, lo - 1)  # first range that ends at or after lo - 1
        j = bisect_right(self._lo, hi + 1)  # ranges before j start at or before hi + 1
        if i < j:
            lo, hi = min(lo, self._lo[i]), max(hi, self._hi[j - 1])
        self._lo[i:j] = [lo]
        self._hi[i:j] = [hi]

    def below(self, seq: int) -> int | None:
        """The highest member below seq."""
        i = bisect_left(self._lo, seq) - 1
        return None if i < 0 else min(self._hi[i], seq - 1)

    def above(self, seq: int) -> int | None:
        """The lowest member above seq."""
        i = bisect_right(self._hi, seq)
        return None if i >= len(self._lo) else max(self._lo[i], seq + 1)

    def present(self, lo: int, hi: int) -> list[tuple[int, int]]:
        """The parts of lo..hi in the set."""
        out = []
        i = bisect_left(self._hi, lo)
        while i < len(self._lo) and self._lo[i] <= hi:
            out.append((max(lo, self._lo[i]), min(hi, self._hi[i])))
            i += 1
        return out

    def missing(self, lo: int, hi: int) -> list[tuple[int, int]]:
        """The parts of lo..hi not in the set."""
        out = []
        for a, b in self.present(lo, hi):
            if a > lo:
                out.append((lo, a - 1))
            lo = b + 1
        if lo <= hi:
            out.append((lo, hi))
        return out

    def count(self, lo: int, hi: int) -> int:
        return sum(b - a + 1 for a, b in self.present(lo, hi))
