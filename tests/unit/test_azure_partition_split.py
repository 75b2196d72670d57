"""How the Azure store splits its control partitions among the live workers (no storage)."""

from __future__ import annotations

from collections import Counter

import pytest

pytest.importorskip("azure.storage.blob")

from duratask.backends.azure._partitions import assigned


@pytest.mark.parametrize("partitions", [1, 4, 6, 16])
@pytest.mark.parametrize("workers", [1, 2, 3, 5])
def test_every_partition_goes_to_one_worker_and_the_shares_differ_by_one_at_most(
    partitions: int, workers: int
) -> None:
    names = [f"hub-control-{n:02d}" for n in range(partitions)]
    members = [f"host:{pid}:x" for pid in range(100, 100 + workers)]
    shares = {m: assigned(members, names, m) for m in members}
    owners = Counter(name for share in shares.values() for name in share)
    assert owners == Counter(names)  # each once
    sizes = [len(share) for share in shares.values()]
    assert max(sizes) - min(sizes) <= 1


def test_every_worker_computes_the_same_split_whatever_order_it_lists_them_in() -> None:
    names = [f"hub-control-{n:02d}" for n in range(4)]
    members = ["b", "c", "a"]
    assert assigned(members, names, "a") == assigned(list(reversed(members)), names, "a")
    # A member not listed yet (its own row not read back) counts itself in.
    assert assigned(["b"], names, "a") == {"hub-control-00", "hub-control-02"}
