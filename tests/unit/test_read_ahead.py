"""engines.common.read_ahead: a producer's items made on a thread of their own, ahead of use;
its failure reaches the consumer, and a consumer that stops early stops and closes it."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from safehold.engines.common import read_ahead


def test_items_arrive_in_order_made_on_another_thread() -> None:
    threads: set[str] = set()

    def produce() -> Iterator[int]:
        for i in range(50):
            threads.add(threading.current_thread().name)
            yield i

    assert list(read_ahead(produce(), name="ahead-test")) == list(range(50))
    assert threads == {"ahead-test"}


def test_the_next_item_is_made_while_the_consumer_holds_the_last() -> None:
    """The consumer, holding item 0, asks for nothing more, and item 1 gets made meanwhile
    (a plain generator would make it only when asked: this waits 10 s in vain)."""
    second = threading.Event()

    def produce() -> Iterator[int]:
        yield 0
        second.set()
        yield 1

    ahead = read_ahead(produce(), name="ahead-test", depth=1)
    assert next(ahead) == 0
    assert second.wait(10), "the producer waited for the consumer"
    assert list(ahead) == [1]


def test_a_failure_reaches_the_consumer_after_the_items_before_it() -> None:
    def produce() -> Iterator[int]:
        yield 1
        raise ValueError("chunk 2 is damaged")

    got: list[int] = []
    with pytest.raises(ValueError, match="chunk 2 is damaged"):
        for item in read_ahead(produce(), name="ahead-test"):
            got.append(item)
    assert got == [1]


def test_a_consumer_that_stops_stops_and_closes_the_producer() -> None:
    closed = threading.Event()
    produced: list[int] = []

    def produce() -> Iterator[int]:
        try:
            for i in range(10_000):
                produced.append(i)
                yield i
        finally:
            closed.set()

    ahead = read_ahead(produce(), name="ahead-test", depth=2)
    assert next(ahead) == 0
    ahead.close()  # what a failing store does to the generator it reads
    assert closed.is_set()  # closed before close() returned: the connection is free
    assert len(produced) <= 5  # it stopped a few items ahead, not at the end
    assert not any(t.name == "ahead-test" for t in threading.enumerate())
