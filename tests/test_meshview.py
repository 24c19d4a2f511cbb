"""The dashboard's mesh graph (p2pkube/dashboard/meshview.py), without a cluster: which links
become edges, and the round trip each edge shows. tests/test_dashboard.py checks the same on
real agents in a browser."""

from __future__ import annotations

from p2pkube.dashboard.meshview import _counts, _edges


def test_a_link_is_one_edge_only_when_both_ends_list_it() -> None:
    links = {"a": {"b", "c"}, "b": {"a"}, "c": set(), "d": {"a"}}
    # a-b: both list it; a-c: only a (c's record is newer: the link closed); a-d: only d.
    assert [(e["source"], e["target"]) for e in _edges(links, {})] == [("a", "b")]


def test_an_edge_shows_the_mean_of_what_its_ends_measured() -> None:
    links = {"a": {"b", "c"}, "b": {"a", "c"}, "c": {"a", "b"}}
    reports = {
        "a": {"rtt": {"b": 4.0, "c": 10.0}},
        "b": {"rtt": {"a": 6.0}},
        "c": {"rtt": "not a table"},  # another node's word, malformed: ignored
    }
    edges = {(e["source"], e["target"]): e for e in _edges(links, reports)}
    assert edges[("a", "b")]["rttMs"] == 5.0
    assert edges[("a", "b")]["rttMsBy"] == {"a": 4.0, "b": 6.0}
    assert edges[("a", "c")]["rttMs"] == 10.0 and edges[("a", "c")]["rttMsBy"] == {"a": 10.0}
    assert edges[("b", "c")]["rttMs"] is None  # nobody measured it (yet)


def test_request_counters_keep_only_well_formed_counts() -> None:
    assert _counts({"default/web": 3, "x": True, "y": "4", "z": 1.5}) == {"default/web": 3}
    assert _counts(["not", "a", "map"]) == {}
