import asyncio

import msgspec

from runstream.bus import (
    Bus,
    ConsumerSpec,
    Delivery,
    MessageConsumer,
    Reject,
    Retry,
    get_dataset,
    put_dataset,
    watch_max_deliveries,
)
from runstream.contracts import LogAppended, new_id, utcnow


def _log(sid: str, mid: str, text: str) -> LogAppended:
    return LogAppended(event_id=new_id(), at=utcnow(), session_id=sid, message_id=mid, text=text)


async def test_provisioning_is_idempotent_and_sets_retention_and_dedupe(bus: Bus):
    again = await bus.provision()
    cfg = again.config
    assert cfg.allow_direct is True
    assert cfg.duplicate_window >= 120
    assert cfg.max_age == bus.settings.max_age_s
    assert cfg.subjects == [f"{bus.settings.prefix}.>"]


async def test_published_events_carry_dedupe_type_and_trace_headers(bus: Bus):
    event = _log("s1", "m1", "hello")
    first = await bus.publish(event)
    second = await bus.publish(event)
    assert second.duplicate and second.seq == first.seq
    raw = await bus.get_msg(first.seq)
    assert raw.headers["Nats-Msg-Id"] == event.event_id
    assert raw.headers["Rs-Type"] == "log_appended"
    assert raw.subject == f"{bus.settings.prefix}.s1.msg.m1.log_appended"


async def test_message_consumer_acks_retries_and_rejects(bus: Bus):
    seen: dict[str, int] = {}
    done = asyncio.Event()

    async def handle(d: Delivery) -> None:
        text = d.event.text
        seen[text] = seen.get(text, 0) + 1
        if text == "flaky" and d.num_delivered < 3:
            raise Retry("not yet", delay=0.05)
        if text == "poison":
            raise Reject("never")
        if seen.get("flaky", 0) >= 3 and "ok" in seen and "poison" in seen:
            done.set()

    for text in ("ok", "flaky", "poison"):
        await bus.publish(_log("s", "m", text))
    stop = asyncio.Event()
    spec = ConsumerSpec(durable="t1", filter_subjects=[bus.subjects.all], fetch_timeout_s=0.2)
    task = asyncio.create_task(MessageConsumer(bus, spec, handle).run(stop))
    await asyncio.wait_for(done.wait(), 10)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert seen == {"ok": 1, "flaky": 3, "poison": 1}
    info = await bus.js.consumer_info(bus.stream, "t1")
    assert info.num_ack_pending == 0 and info.num_pending == 0


async def test_a_message_that_exhausts_its_deliveries_raises_the_advisory(bus: Bus):
    exhausted: asyncio.Queue = asyncio.Queue()

    async def on_exhausted(adv, raw) -> None:
        await exhausted.put((adv, raw))

    sub = await watch_max_deliveries(bus, "t2", on_exhausted)

    async def handle(d: Delivery) -> None:
        raise Retry("always down", delay=0.01)

    published = await bus.publish(_log("s", "m", "doomed"))
    stop = asyncio.Event()
    spec = ConsumerSpec(durable="t2", filter_subjects=[bus.subjects.all], max_deliver=2,
                        fetch_timeout_s=0.2)
    task = asyncio.create_task(MessageConsumer(bus, spec, handle).run(stop))
    adv, raw = await asyncio.wait_for(exhausted.get(), 10)
    stop.set()
    await task
    await sub.unsubscribe()
    assert adv.stream_seq == published.seq and adv.deliveries == 2
    assert raw.seq == published.seq


async def test_a_long_handler_is_kept_alive_by_in_progress_heartbeats(bus: Bus):
    calls = 0
    finished = asyncio.Event()

    async def handle(d: Delivery) -> None:
        nonlocal calls
        calls += 1
        await asyncio.sleep(2.5)  # the behaviour under test: longer than ack_wait
        finished.set()

    await bus.publish(_log("s", "m", "slow"))
    stop = asyncio.Event()
    spec = ConsumerSpec(durable="t3", filter_subjects=[bus.subjects.all], ack_wait_s=1.0,
                        fetch_timeout_s=0.2)
    task = asyncio.create_task(MessageConsumer(bus, spec, handle).run(stop))
    await asyncio.wait_for(finished.wait(), 10)
    stop.set()
    await task
    assert calls == 1, "no redelivery while the handler heartbeats"


async def test_datasets_round_trip_through_the_object_store(bus: Bus):
    payload = msgspec.json.encode({"rows": list(range(1000))})
    await put_dataset(bus, "ds1", payload)
    assert await get_dataset(bus, "ds1") == payload


async def test_a_burst_far_beyond_concurrency_drains_with_slots_never_overfilled(bus: Bus):
    """More work than slots: the runner waits (never spins) and takes new work as slots free."""
    concurrency, total = 4, 60
    release = asyncio.Event()
    in_flight = peak = handled = 0
    all_done = asyncio.Event()
    saturated = asyncio.Event()

    async def handle(d: Delivery) -> None:
        nonlocal in_flight, peak, handled
        in_flight += 1
        peak = max(peak, in_flight)
        if in_flight == concurrency:
            saturated.set()
        await release.wait()
        in_flight -= 1
        handled += 1
        if handled == total:
            all_done.set()

    for i in range(total):
        await bus.publish(_log("s", "m", f"job {i}"))
    stop = asyncio.Event()
    spec = ConsumerSpec(durable="burst", filter_subjects=[bus.subjects.all],
                        concurrency=concurrency, fetch_timeout_s=0.2)
    runner = MessageConsumer(bus, spec, handle)
    task = asyncio.create_task(runner.run(stop))
    await asyncio.wait_for(saturated.wait(), 10)
    # Every slot is held: the event loop must stay free for others (a spinning runner
    # would starve this timer forever).
    ticks = 0
    for _ in range(5):
        await asyncio.wait_for(asyncio.sleep(0.01), 2)
        ticks += 1
    info = await bus.js.consumer_info(bus.stream, "burst")
    assert info.num_ack_pending == concurrency, "no more than the free slots were pulled"
    release.set()
    await asyncio.wait_for(all_done.wait(), 20)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert ticks == 5 and peak == concurrency and handled == total
    info = await bus.js.consumer_info(bus.stream, "burst")
    assert info.num_ack_pending == 0 and info.num_pending == 0
    assert runner.in_flight == 0


async def test_work_is_taken_as_soon_as_one_slot_frees(bus: Bus):
    """Slots held by slow handlers do not stop quick ones from flowing through a free slot."""
    slow_release = asyncio.Event()
    quick_done: asyncio.Queue[str] = asyncio.Queue()

    async def handle(d: Delivery) -> None:
        if d.event.text.startswith("slow"):
            await slow_release.wait()
        else:
            await quick_done.put(d.event.text)

    for text in ("slow 1", "slow 2", "slow 3"):
        await bus.publish(_log("s", "m", text))
    stop = asyncio.Event()
    spec = ConsumerSpec(durable="flow", filter_subjects=[bus.subjects.all],
                        concurrency=4, fetch_timeout_s=0.2)
    task = asyncio.create_task(MessageConsumer(bus, spec, handle).run(stop))
    for i in range(20):  # published while three slots stay held: one slot serves them all
        await bus.publish(_log("s", "m", f"quick {i}"))
    got = [await asyncio.wait_for(quick_done.get(), 10) for _ in range(20)]
    assert sorted(got) == sorted(f"quick {i}" for i in range(20))
    slow_release.set()
    stop.set()
    await asyncio.wait_for(task, 10)


async def test_stop_hands_back_unfinished_work_at_once_instead_of_after_ack_wait(bus: Bus):
    stuck = asyncio.Event()
    redelivered: asyncio.Queue[int] = asyncio.Queue()

    async def hang(d: Delivery) -> None:
        stuck.set()
        await asyncio.Event().wait()  # a handler that would never finish

    async def finish(d: Delivery) -> None:
        await redelivered.put(d.num_delivered)

    await bus.publish(_log("s", "m", "long"))
    spec = ConsumerSpec(durable="handback", filter_subjects=[bus.subjects.all],
                        ack_wait_s=60.0, stop_grace_s=0.2, fetch_timeout_s=0.2)
    stop = asyncio.Event()
    first = asyncio.create_task(MessageConsumer(bus, spec, hang).run(stop))
    await asyncio.wait_for(stuck.wait(), 10)
    stop.set()
    await asyncio.wait_for(first, 10)  # stops after the grace, not after ack_wait

    stop2 = asyncio.Event()
    second = asyncio.create_task(MessageConsumer(bus, spec, finish).run(stop2))
    # Far sooner than ack_wait (60 s): the stopped runner naked the message.
    assert await asyncio.wait_for(redelivered.get(), 15) == 2
    stop2.set()
    await asyncio.wait_for(second, 10)


async def test_a_nats_outage_inside_a_handler_does_not_spend_a_delivery(bus: Bus):
    """A handler failing because NATS itself is away runs again in place: the message is
    not redelivered, so a long election cannot exhaust max_deliver."""
    import nats.errors

    calls: list[int] = []
    done = asyncio.Event()

    async def handle(d: Delivery) -> None:
        calls.append(d.num_delivered)
        if len(calls) < 3:
            raise nats.errors.TimeoutError  # what a request sees while leaders are elected
        done.set()

    await bus.publish(_log("s", "m", "during an election"))
    stop = asyncio.Event()
    spec = ConsumerSpec(durable="outage", filter_subjects=[bus.subjects.all], max_deliver=2,
                        fetch_timeout_s=0.2)
    task = asyncio.create_task(MessageConsumer(bus, spec, handle).run(stop))
    await asyncio.wait_for(done.wait(), 20)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert calls == [1, 1, 1], "run again on the same delivery, never redelivered"
    info = await bus.js.consumer_info(bus.stream, "outage")
    assert info.num_ack_pending == 0 and info.num_redelivered == 0


async def test_every_consumer_is_listed_past_the_servers_page_and_marked_by_kind(bus: Bus):
    from nats.js import api

    from runstream.bus import OrderedReader, ensure_consumer, list_consumers
    from runstream.bus.inventory import PAGE

    await bus.publish(_log("s1", "m1", "one"))
    spec = ConsumerSpec(durable="a-worker", filter_subjects=[bus.subjects.all])
    await ensure_consumer(bus, spec)
    reader = OrderedReader(bus.js, bus.stream, bus.subjects.all, name_prefix="projector")
    await reader.start(0)
    replay = await bus.js.subscribe(bus.subjects.all, stream=bus.stream, ordered_consumer=True,
                                    config=api.ConsumerConfig(inactive_threshold=30.0))
    extra = PAGE + 4  # more than one page of the server's list
    for i in range(extra):
        await bus.js.add_consumer(bus.stream, api.ConsumerConfig(
            name=f"extra_{i:03d}", ack_policy=api.AckPolicy.NONE, mem_storage=True,
            inactive_threshold=60.0))
    try:
        rows = await list_consumers(bus)
    finally:
        await replay.unsubscribe()
        await reader.close()

    assert len(rows) == extra + 3 == len({r.name for r in rows})
    by_name = {r.name: r for r in rows}
    assert rows[0].name == "a-worker"  # durable ones first
    assert (by_name["a-worker"].kind, by_name["a-worker"].ephemeral) == ("durable", False)
    assert by_name["a-worker"].pending == 1
    readers = [r for r in rows if r.name.startswith("projector_")]
    assert [(r.kind, r.ephemeral) for r in readers] == [("reader", True)]
    replays = [r for r in rows if r.kind == "replay"]
    assert len(replays) == 1 and replays[0].ephemeral
    assert all(by_name[f"extra_{i:03d}"].ephemeral for i in range(extra))
