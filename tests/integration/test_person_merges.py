"""``store.merge_person_graph``: the SQL union-find that decides which persons aliases join.

Each case gives personid pairs over users whose persons are still apart, merges them in a
transaction that is rolled back, and compares every user's person with connected components
found by breadth-first search.
"""

from __future__ import annotations

import itertools
from collections import defaultdict, deque

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from km2pg import db, store

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def merged(con: db.Connection, pairs: list[tuple[int, int]]) -> dict[int, int]:
    """Every user that must change person, to its new personid."""
    nodes = sorted({n for pair in pairs for n in pair})
    edges = [(a, b) for a, b in pairs if a != b]
    con.run("BEGIN")
    try:
        con.run(
            "INSERT INTO km2pg.users (userid, name, personid)"
            " SELECT n, 'user ' || n, n FROM unnest(CAST(:nodes AS bigint[])) AS n",
            nodes=nodes,
        )
        con.run(
            "CREATE TEMP TABLE s_person_edges ON COMMIT DROP AS SELECT DISTINCT a, b"
            " FROM unnest(CAST(:a AS bigint[]), CAST(:b AS bigint[])) AS e (a, b)",
            a=[a for a, _ in edges] + [b for _, b in edges],
            b=[b for _, b in edges] + [a for a, _ in edges],
        )
        changed = store.merge_person_graph(con)
        rows = db.rows(con, "SELECT userid, personid FROM km2pg.users WHERE userid <> personid")
    finally:
        con.run("ROLLBACK")
    answer = {int(u): int(p) for u, p in rows}
    assert changed == len(answer)
    return answer


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


def test_no_pairs_no_merges(con) -> None:
    assert merged(con, []) == {}


def test_one_pair_moves_the_larger_to_the_smaller(con) -> None:
    assert merged(con, [(7, 3)]) == {7: 3}
    assert merged(con, [(3, 7)]) == {7: 3}


def test_a_pair_with_itself_changes_nothing(con) -> None:
    assert merged(con, [(5, 5)]) == {}


def test_repeating_a_pair_is_harmless(con) -> None:
    assert merged(con, [(1, 2), (2, 1), (1, 2)]) == {2: 1}


@pytest.mark.parametrize("order", list(itertools.permutations(range(4)))[::5])
def test_a_chain_in_any_order_gives_every_member_the_smallest_id(con, order) -> None:
    chain = [(40, 30), (30, 20), (20, 10), (50, 40)]
    pairs = [chain[i] for i in order]
    assert merged(con, pairs) == {20: 10, 30: 10, 40: 10, 50: 10}
    assert merged(con, [(b, a) for a, b in pairs]) == {20: 10, 30: 10, 40: 10, 50: 10}


def test_a_long_chain_from_either_end(con) -> None:
    far = [(n, n + 1) for n in range(1000, 0, -1)]
    assert merged(con, far) == dict.fromkeys(range(2, 1002), 1)
    near = [(n + 1, n) for n in range(1, 1001)]
    assert merged(con, near) == dict.fromkeys(range(2, 1002), 1)


def test_unrelated_pairs_stay_apart(con) -> None:
    assert merged(con, [(1, 2), (10, 20), (5, 3)]) == {2: 1, 20: 10, 5: 3}


def test_two_clusters_joined_later_become_one(con) -> None:
    pairs = [(5, 6), (1, 9), (6, 7), (9, 8), (8, 7)]
    assert merged(con, pairs) == dict.fromkeys((5, 6, 7, 8, 9), 1)


def test_a_star_merges_into_its_smallest_member(con) -> None:
    pairs = [(100, n) for n in range(101, 200)] + [(150, 3)]
    assert merged(con, pairs) == dict.fromkeys(range(100, 200), 3)


@SETTINGS
@given(
    pairs=st.lists(
        st.tuples(st.integers(min_value=1, max_value=40), st.integers(min_value=1, max_value=40)),
        max_size=60,
    )
)
def test_merges_match_connected_components(con, pairs: list[tuple[int, int]]) -> None:
    assert merged(con, pairs) == reference(pairs)


@SETTINGS
@given(
    pairs=st.lists(
        st.tuples(
            st.integers(min_value=1, max_value=2**32 - 1),
            st.integers(min_value=1, max_value=2**32 - 1),
        ),
        max_size=30,
    ),
    data=st.data(),
)
def test_merges_do_not_depend_on_pair_order(con, pairs, data: st.DataObject) -> None:
    shuffled = data.draw(st.permutations(pairs))
    assert merged(con, shuffled) == merged(con, pairs) == reference(pairs)
