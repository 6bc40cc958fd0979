"""The arithmetic of stream digests: versions weigh event hashes, and parts of a stream add up."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from eventmig.model.checksums import P, R, StreamDigests, event_hash, weight

# the prime factors of P - 1 = 2 * (2**63 - 1) * (2**63 + 1)
_FACTORS_OF_P_MINUS_1 = (2, 3, 7, 19, 43, 73, 127, 337, 5419, 92737, 649657, 77158673929)


def _is_prime(n: int) -> bool:
    """Miller-Rabin with the first twelve primes as bases: exact for every n below 3.3 * 10**24."""
    if n < 2:
        return False
    bases = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)
    if n in bases:
        return True
    if any(n % b == 0 for b in bases):
        return False
    d, s = n - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    for a in bases:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def test_r_is_a_primitive_root_so_no_two_versions_weigh_alike():
    """R ** a == R ** b (mod P) only when a == b (mod P - 1): a renumbered version always changes the sum."""
    rest = P - 1
    for q in _FACTORS_OF_P_MINUS_1:
        assert _is_prime(q)
        while rest % q == 0:
            rest //= q
    assert rest == 1 and math.prod(_FACTORS_OF_P_MINUS_1) * 3 * 3 * 7 == P - 1  # 3**3 and 7**2 divide it
    assert all(pow(R, (P - 1) // q, P) != 1 for q in _FACTORS_OF_P_MINUS_1)


def test_weights_are_the_powers_of_r():
    for version in (0, 1, 2, 4095, 4096, 65535, 65536, 65537, 1_000_003, 2**32 - 1, 2**32, 2**40, -1, -7):
        assert weight(version) == pow(R, version, P), version


_events = st.lists(st.tuples(st.sampled_from(["s1", "s2", "s3"]), st.binary(max_size=8)), max_size=30)


@settings(max_examples=50, deadline=None)
@given(events=_events, cuts=st.lists(st.integers(0, 30), max_size=4))
def test_a_stream_numbered_in_parts_equals_the_stream_numbered_at_once(events, cuts):
    """What workers do: number each slice from 0, and let the parent move it on; against the target's way,
    each event weighed by its own version."""
    numbered = StreamDigests(first_version=1)
    bounds = [0, *sorted(min(c, len(events)) for c in cuts), len(events)]
    for start, end in zip(bounds, bounds[1:]):
        sums: dict[str, int] = {}
        lengths: dict[str, int] = {}
        for stream, data in events[start:end]:
            n = lengths.get(stream, 0)
            sums[stream] = sums.get(stream, 0) + event_hash("T", 1, None, None, data, b"{}") * weight(n)
            lengths[stream] = n + 1
        numbered.add_numbered({s: (total % P, lengths[s]) for s, total in sums.items()})

    versioned = StreamDigests()
    seen: dict[str, int] = {}
    for stream, data in events:
        seen[stream] = seen.get(stream, 0) + 1
        versioned.add_versioned({stream: (event_hash("T", 1, None, None, data, b"{}") * weight(seen[stream]) % P, 1)})
    assert numbered.sums == versioned.sums and numbered.lengths == versioned.lengths
    assert numbered.store_digest() == versioned.store_digest()


def test_the_flat_digest_loops_hash_what_expected_and_actual_describe(sqlite_url, shop_registry):
    """digest_source and digest_target are written flat for speed; explaining a difference reads events
    through Transformer.expected and .actual instead: both must mean the same events."""
    from eventmig.jobs.seed import seed
    from eventmig.jobs.migrate import migrate
    from eventmig.backends import open_store
    from eventmig.model.transform import BatchCounts, Transformer

    with open_store(sqlite_url) as store:
        seed(store, 600)
        report = migrate(store, shop_registry, workers=1)
        source = [r for rows in store.at_epoch(1).read_all_rows() for r in rows]
        target = [r for rows in store.at_epoch(report.target_epoch).read_all_rows() for r in rows]
    transformer = Transformer(shop_registry)

    expected: dict[str, tuple[int, int]] = {}
    for stream, type_, version, data, meta, event_id, recorded_at in transformer.expected(source, BatchCounts(), []):
        total, n = expected.get(stream, (0, 0))
        expected[stream] = ((total + event_hash(type_, version, event_id, recorded_at, data, meta) * weight(n)) % P, n + 1)
    assert transformer.digest_source(source).streams == expected

    actual: dict[str, tuple[int, int]] = {}
    for stream, v, _position, type_, version, data, meta, event_id, recorded_at in map(transformer.actual, target):
        total, n = actual.get(stream, (0, 0))
        actual[stream] = ((total + event_hash(type_, version, event_id, recorded_at, data, meta) * weight(v)) % P, n + 1)
    assert transformer.digest_target(target).streams == actual
    # and the two sides meet: the source numbered from 0 is the target, numbered from 1, moved back by one
    assert {s: (total * weight(1) % P, n) for s, (total, n) in expected.items()} == actual
