"""``store.person_merges``: the union-find that decides which persons an alias batch joins."""

from __future__ import annotations

import itertools
from collections import defaultdict, deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from km2pg.store import person_merges


def merged(pairs: list[tuple[int, int]], nodes: set[int]) -> dict[int, int]:
    """Every node's person after the merges (a node not in the answer keeps its own id)."""
    changes = person_merges(pairs)
    return {node: changes.get(node, node) for node in nodes}


def reference(pairs: list[tuple[int, int]]) -> dict[int, int]:
    """Connected components by breadth-first search: each node to its component's smallest id,
    for every node that must change."""
    graph: dict[int, set[int]] = defaultdict(set)
    for a, b in pairs:
        graph[a].add(b)
        graph[b].add(a)
    seen: set[int] = set()
    out: dict[int, int] = {}
    for start in graph:
        if start in seen:
            continue
        component = {start}
        queue = deque([start])
        while queue:
            node = queue.popleft()
            for nxt in graph[node] - component:
                component.add(nxt)
                queue.append(nxt)
        seen |= component
        low = min(component)
        out.update({node: low for node in component if node != low})
    return out


def test_no_pairs_no_merges() -> None:
    assert person_merges([]) == {}


def test_one_pair_moves_the_larger_to_the_smaller() -> None:
    assert person_merges([(7, 3)]) == {7: 3}
    assert person_merges([(3, 7)]) == {7: 3}


def test_a_pair_with_itself_changes_nothing() -> None:
    assert person_merges([(5, 5)]) == {}


def test_repeating_a_pair_is_harmless() -> None:
    assert person_merges([(1, 2), (2, 1), (1, 2)]) == {2: 1}


@pytest.mark.parametrize("order", list(itertools.permutations(range(4))))
def test_a_chain_in_any_order_gives_every_member_the_smallest_id(order: tuple[int, ...]) -> None:
    chain = [(40, 30), (30, 20), (20, 10), (50, 40)]
    pairs = [chain[i] for i in order]
    assert person_merges(pairs) == {20: 10, 30: 10, 40: 10, 50: 10}
    flipped = [(b, a) for a, b in pairs]
    assert person_merges(flipped) == {20: 10, 30: 10, 40: 10, 50: 10}


def test_a_long_chain_built_from_the_far_end() -> None:
    pairs = [(n, n + 1) for n in range(1000, 0, -1)]
    assert person_merges(pairs) == dict.fromkeys(range(2, 1002), 1)


def test_a_long_chain_built_from_the_near_end() -> None:
    pairs = [(n + 1, n) for n in range(1, 1001)]
    assert person_merges(pairs) == dict.fromkeys(range(2, 1002), 1)


def test_unrelated_pairs_stay_apart() -> None:
    assert person_merges([(1, 2), (10, 20), (5, 3)]) == {2: 1, 20: 10, 5: 3}


def test_two_clusters_joined_later_become_one() -> None:
    pairs = [(5, 6), (1, 9), (6, 7), (9, 8), (8, 7)]
    assert merged(pairs, {1, 5, 6, 7, 8, 9}) == dict.fromkeys((1, 5, 6, 7, 8, 9), 1)


def test_a_star_merges_into_its_smallest_member() -> None:
    pairs = [(100, n) for n in range(101, 200)] + [(150, 3)]
    assert person_merges(pairs) == dict.fromkeys(range(100, 200), 3)


def test_the_smallest_id_of_a_cluster_is_never_in_the_answer() -> None:
    changes = person_merges([(4, 2), (2, 8), (9, 11)])
    assert 2 not in changes
    assert 9 not in changes
    assert all(target < node for node, target in changes.items())


def test_pairs_may_be_a_one_shot_iterator() -> None:
    assert person_merges(iter([(2, 1), (3, 2)])) == {2: 1, 3: 1}


@settings(max_examples=200, deadline=None, database=None)
@given(
    pairs=st.lists(
        st.tuples(st.integers(min_value=1, max_value=40), st.integers(min_value=1, max_value=40)),
        max_size=60,
    )
)
def test_person_merges_matches_connected_components(pairs: list[tuple[int, int]]) -> None:
    assert person_merges(pairs) == reference(pairs)


@settings(max_examples=100, deadline=None, database=None)
@given(
    pairs=st.lists(
        st.tuples(
            st.integers(min_value=-(2**62), max_value=2**62),
            st.integers(min_value=-(2**62), max_value=2**62),
        ),
        max_size=30,
    ),
    data=st.data(),
)
def test_person_merges_does_not_depend_on_pair_order(
    pairs: list[tuple[int, int]], data: st.DataObject
) -> None:
    shuffled = data.draw(st.permutations(pairs))
    assert person_merges(shuffled) == person_merges(pairs) == reference(pairs)
