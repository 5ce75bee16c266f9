"""The garbage collector of a serving worker: start-up frozen, young collections rarer,
every pause timed."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from support.server import ADMIN, CASES, settings

from arbiter.server import gc_pauses
from arbiter.server.app import create_app


class Node:
    """A weak-referenceable object that can be part of a cycle."""

    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """This test process's collector as it was: nothing frozen, thresholds restored."""
    assert not gc_pauses.frozen()
    thresholds = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def garbage_cycle() -> weakref.ref[Node]:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


def test_a_frozen_cycle_is_freed_only_once_refrozen(unfrozen: None) -> None:
    a, b = Node(), Node()
    a.other, b.other = b, a
    alive = weakref.ref(a)
    gc_pauses.freeze()
    assert gc_pauses.frozen()
    del a, b  # garbage now, but frozen: out of the collector's reach
    gc.collect()
    assert alive() is not None
    gc_pauses.refreeze()
    assert alive() is None
    assert gc_pauses.frozen()


def test_garbage_made_after_the_freeze_is_collected(unfrozen: None) -> None:
    gc_pauses.freeze()
    ref = garbage_cycle()
    gc.collect()
    assert ref() is None


def test_the_watch_times_collections_by_generation_while_installed() -> None:
    seen: list[tuple[int, float]] = []
    watch = gc_pauses.PauseWatch(lambda generation, seconds: seen.append((generation, seconds)))
    watch.install()
    try:
        gc.collect(0)
        gc.collect(2)
    finally:
        watch.remove()
    assert [g for g, _ in seen][-2:] == [0, 2]
    assert all(s >= 0 for _, s in seen)
    count = len(seen)
    gc.collect()
    assert len(seen) == count


def samples(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = client.get("/metrics", headers=ADMIN).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def full_collections(found: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> float:
    return found[("arbiter_gc_pause_seconds_count", (("generation", "2"),))]


def test_a_serving_app_tunes_freezes_and_refreezes_when_a_version_goes_live(
    redis_url: str, tmp_path: Path, unfrozen: None
) -> None:
    app = create_app(settings(redis_url, tmp_path, gc_tuning=True))
    with TestClient(app) as client:
        assert gc.get_threshold()[0] == gc_pauses.YOUNG_THRESHOLD
        found = samples(client)
        assert found[("arbiter_gc_frozen_objects", ())] > 0
        # The freeze's own full collection, timed.
        before = full_collections(found)
        assert before >= 1
        text = (CASES / "shop.rules").read_text().replace("value 1 }", "value 3 }", 1)
        assert text != (CASES / "shop.rules").read_text()
        r = client.put("/v1/rulesets/shop", content=text, headers=ADMIN)
        assert r.status_code == 200, r.text
        # The old version's cycles are collectable again: one more full collection.
        assert full_collections(samples(client)) > before
        assert gc_pauses.frozen()


def test_an_app_built_for_a_test_leaves_the_collector_alone(
    redis_url: str, tmp_path: Path, unfrozen: None
) -> None:
    thresholds = gc.get_threshold()
    app = create_app(settings(redis_url, tmp_path))
    with TestClient(app) as client:
        assert gc.get_threshold() == thresholds
        body = {"customer_id": "c1", "context": {"channel": "web", "page": "/"}}
        assert client.post("/v1/decide", json=body).status_code == 200
        assert not gc_pauses.frozen()
