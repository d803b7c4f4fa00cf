"""The reducers without Postgres: what each aggregate makes of its events, and that a
batch folds to the same rows whatever its size (property tests over random streams)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runstream.contracts import (
    AnalysisRequested,
    AnalysisSettled,
    AnalysisStarted,
    CancelRequested,
    ChartCancelled,
    ChartCancelRequested,
    ChartCompleted,
    ChartFailed,
    ChartProgressed,
    ChartRequested,
    ChartStarted,
    Column,
    DatasetAttached,
    DeadLetter,
    ErrorInfo,
    Event,
    ExecutionCompleted,
    ExecutionFailed,
    Lock,
    LockRenewed,
    LogAppended,
    ScriptGenerated,
    SessionCreated,
    SessionRead,
    SessionRenamed,
    StepCompleted,
    StepFailed,
    StepProgressed,
    StepStarted,
    encode,
)
from runstream.projector.fold import Batch, State, Table
from services.projector.tests.unit.memory_store import MemoryStore

T0 = datetime(2025, 1, 1, tzinfo=UTC)
SESSIONS = ["s1", "s2"]
ANALYSES = [("m1", "u1"), ("m2", "u2"), ("m3", "u3")]
TASKS = ["t1", "t2"]
STEPS = ["plan", "execute"]


def items(events: list[Event], first: int = 1) -> list[tuple[int, str, bytes]]:
    return [(first + i, f"rs.{e.session_id}.x", encode(e)) for i, e in enumerate(events)]


def fold_in_batches(events: list[Event], cuts: list[int]) -> dict[str, Any]:
    store = MemoryStore()
    stream = items(events)
    bounds = [0, *sorted(set(cuts)), len(stream)]
    for start, end in itertools.pairwise(bounds):
        if start < end:
            store.fold(stream[start:end])
    return store.dump()


# --- a random stream over a small universe, so events meet each other's rows ----------

SESSION_OF = {"m1": "s1", "m2": "s1", "m3": "s2", "t1": "s1", "t2": "s2"}
MESSAGE_OF = {"t1": "m1", "t2": "m3"}


def _base(draw: st.DrawFn, owner: str) -> dict[str, Any]:
    """Mostly in the session of the entity it names; now and then in another one."""
    foreign = draw(st.integers(0, 9)) == 0
    return {
        "event_id": f"e{draw(st.integers(0, 60))}",  # a few re-published event ids
        "at": T0 + timedelta(seconds=draw(st.integers(0, 50))),
        "session_id": draw(st.sampled_from(SESSIONS)) if foreign else SESSION_OF[owner],
    }


@st.composite
def events(draw: st.DrawFn) -> Event:
    mid, uid = draw(st.sampled_from(ANALYSES))
    tid = draw(st.sampled_from(TASKS))
    base = _base(draw, tid if draw(st.integers(0, 3)) == 0 else mid)
    step = draw(st.sampled_from(STEPS))
    attempt = draw(st.integers(1, 2))
    lock = draw(st.sampled_from([None, Lock(message_id=mid, acquired_at=T0,
                                            expires_at=T0 + timedelta(hours=1))]))
    msg = {**base, "message_id": mid, "attempt": attempt}
    chart = {**base, "task_id": tid, "message_id": MESSAGE_OF[tid]}
    kind = draw(st.integers(0, 25))
    options: list[Any] = [
        lambda: SessionCreated(**base, owner="alice", title=draw(st.sampled_from(["", "a"]))),
        lambda: AnalysisRequested(**base, lock=lock, message_id=mid, user_message_id=uid,
                                  owner="alice", question="q?"),
        lambda: AnalysisSettled(
            **base, lock=lock, message_id=mid,
            status=draw(st.sampled_from(["completed", "failed", "cancelled", "expired"])),
            summary=draw(st.sampled_from([None, "done"])),
            error=draw(st.sampled_from([None, ErrorInfo(code="x", message="boom")])),
            dead_letter=draw(st.sampled_from(
                [None, DeadLetter(consumer="c", stream_seq=3, deliveries=5)])),
        ),
        lambda: LockRenewed(**base, lock=lock, message_id=mid),
        lambda: SessionRead(**base, owner="alice"),
        lambda: DatasetAttached(**base, dataset_id=draw(st.sampled_from(["d1", "d2"])),
                                name="n", format="csv", object_name="o", size_bytes=1,
                                row_count=2, columns=[Column(name="a", type="int")]),
        lambda: AnalysisStarted(**msg),
        lambda: StepStarted(**msg, step=step, index=1, total=5,
                            eta_ms=draw(st.sampled_from([None, 100]))),
        lambda: StepProgressed(**msg, step=step, progress=draw(st.sampled_from([0.0, 50.0]))),
        lambda: StepCompleted(**msg, step=step, duration_ms=draw(st.integers(1, 999))),
        lambda: StepFailed(**msg, step=step, error="bad",
                           duration_ms=draw(st.sampled_from([None, 7]))),
        lambda: LogAppended(**msg, text="line", step=draw(st.sampled_from([None, *STEPS]))),
        lambda: LogAppended(**msg, text="line"),
        lambda: ScriptGenerated(**msg, sql="select 1", explanation="e", planner="rules",
                                interpretation=draw(st.sampled_from(["", "the sum"]))),
        lambda: ExecutionCompleted(**msg, columns=[Column(name="a", type="int")], rows=[[1]],
                                   row_count=1),
        lambda: ExecutionFailed(**msg, kind="sql", error="nope"),
        lambda: CancelRequested(**msg),
        lambda: ChartRequested(**chart, owner="alice"),
        lambda: ChartStarted(**chart, eta_ms=draw(st.sampled_from([None, 5]))),
        lambda: ChartProgressed(**chart, progress=40.0, current_step="render"),
        lambda: ChartCompleted(**chart, chart_id=draw(st.sampled_from(["c1", "c2"])), kind="bar"),
        lambda: ChartFailed(**chart, error="x"),
        lambda: ChartCancelRequested(**chart),
        lambda: ChartCancelled(**chart),
        lambda: StepStarted(**msg, step=step, index=2, total=5),
        lambda: SessionRenamed(**base, lock=lock, owner="alice", title="named"),
    ]
    return options[kind]()  # type: ignore[no-any-return]


@st.composite
def stories(draw: st.DrawFn) -> list[Event]:
    """Mostly well-formed (sessions and analyses exist first), with random noise after."""
    opening: list[Event] = [
        SessionCreated(event_id=f"c-{sid}", at=T0, session_id=sid, owner="alice")
        for sid in draw(st.permutations(SESSIONS))
    ]
    for mid, uid in ANALYSES:
        if draw(st.integers(0, 3)):
            opening.append(AnalysisRequested(
                event_id=f"r-{mid}", at=T0, session_id=SESSION_OF[mid], message_id=mid,
                user_message_id=uid, owner="alice", question="q"))  # fmt: skip
    return opening + draw(st.lists(events(), max_size=80))


@settings(max_examples=300, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(stream=stories(), cuts=st.lists(st.integers(0, 90), max_size=8))
def test_a_batch_folds_to_the_same_rows_as_one_event_at_a_time(
    stream: list[Event], cuts: list[int]
) -> None:
    one_at_a_time = fold_in_batches(stream, list(range(len(stream))))
    assert fold_in_batches(stream, []) == one_at_a_time
    assert fold_in_batches(stream, cuts) == one_at_a_time


@settings(max_examples=100, deadline=None, database=None)
@given(stream=stories())
def test_folding_a_stream_twice_gives_the_same_rows(stream: list[Event]) -> None:
    """Deterministic: nothing depends on the clock or on dict order."""
    assert fold_in_batches(stream, [7]) == fold_in_batches(stream, [7])


# --- each aggregate, by example -------------------------------------------------------

def _fold(events: list[Event], store: MemoryStore | None = None) -> MemoryStore:
    store = store or MemoryStore()
    store.fold(items(events))
    return store


def _created(sid: str = "s1") -> SessionCreated:
    return SessionCreated(event_id=f"c-{sid}", at=T0, session_id=sid, owner="alice", title="t")


def _requested(mid: str = "m1", at: datetime = T0) -> AnalysisRequested:
    lock = Lock(message_id=mid, acquired_at=at, expires_at=at + timedelta(hours=1))
    return AnalysisRequested(event_id=f"r-{mid}", at=at, session_id="s1", message_id=mid,
                             user_message_id=f"u-{mid}", owner="alice", question="how many?",
                             lock=lock)


def _msg(cls: type[Any], n: int, **kw: Any) -> Any:
    return cls(event_id=f"e{n}", at=T0 + timedelta(seconds=n), session_id="s1",
               message_id="m1", **kw)


def test_a_request_makes_the_question_and_a_pending_answer_and_locks_the_session() -> None:
    store = _fold([_created(), _requested()])
    assert store.messages["u-m1"]["role"] == "user"
    assert store.messages["u-m1"]["sort_key"] == 4 and store.messages["m1"]["sort_key"] == 5
    assert store.messages["m1"]["status"] == "pending"
    assert store.sessions["s1"]["status"] == "analyzing"
    assert store.sessions["s1"]["active_message_id"] == "m1"
    assert store.locks["s1"]["message_id"] == "m1"
    assert store.sessions["s1"]["last_seq"] == 2


def test_a_settled_status_is_sticky_and_closes_the_open_steps() -> None:
    store = _fold([
        _created(), _requested(), _msg(StepStarted, 3, step="plan", index=1, total=5),
        AnalysisSettled(event_id="e4", at=T0 + timedelta(seconds=4), session_id="s1",
                        message_id="m1", status="cancelled", summary="stopped"),
        _msg(AnalysisStarted, 5), _msg(StepCompleted, 6, step="plan", duration_ms=9),
    ])  # fmt: skip
    assert store.messages["m1"]["status"] == "cancelled"
    assert store.messages["m1"]["settled_seq"] == 4
    assert store.steps[("m1", "plan")]["status"] == "cancelled"
    assert store.steps[("m1", "plan")]["ended_at"] == T0 + timedelta(seconds=4)
    assert store.sessions["s1"]["status"] == "idle"
    assert store.sessions["s1"]["has_notification"] is True
    assert store.durations == {}  # the late completion counted nothing
    assert store.messages["m1"]["last_seq"] == 6  # positions still move


def test_step_durations_keep_a_running_mean_counted_once_per_step() -> None:
    store = _fold([
        _created(), _requested(),
        _msg(StepStarted, 3, step="plan", index=1, total=5),
        _msg(StepCompleted, 4, step="plan", duration_ms=100),
        _msg(StepCompleted, 5, step="plan", duration_ms=300),  # a redelivered completion
    ])  # fmt: skip
    assert store.durations["plan"] == {"step": "plan", "count": 1, "mean_ms": 100.0}
    second = {"at": T0, "session_id": "s1", "message_id": "m2", "step": "plan"}
    store = _fold([
        _requested("m2"), StepStarted(event_id="x", index=1, total=5, **second),
        StepCompleted(event_id="y", duration_ms=300, **second),
    ], store)  # fmt: skip
    assert store.durations["plan"] == {"step": "plan", "count": 2, "mean_ms": 200.0}
    assert store.steps[("m2", "plan")]["eta_ms"] == 0  # completed
    third = {**second, "message_id": "m3"}
    store = _fold([_requested("m3"), StepStarted(event_id="z", index=1, total=5, **third)], store)
    assert store.steps[("m3", "plan")]["eta_ms"] == 200  # the mean, as the ETA


def test_orphans_foreign_ids_and_stale_logs_become_poison_rows() -> None:
    store = _fold([
        _msg(LogAppended, 1, text="orphan"),  # no message yet
        _created(), _requested(),
        LogAppended(event_id="e4", at=T0, session_id="s2", message_id="m1", text="foreign"),
        _msg(AnalysisStarted, 5, attempt=2),
        _msg(LogAppended, 6, text="old attempt", attempt=1),
        _msg(LogAppended, 7, text="kept", attempt=2),
    ])  # fmt: skip
    reasons = {row["seq"]: row["error"].split(":")[0] for row in store.appends["poison_events"]}
    assert reasons == {1: "orphan", 4: "mismatch", 6: "stale log"}
    assert [row["text"] for row in store.appends["message_logs"]] == ["kept"]


def test_after_the_settle_only_a_log_ending_a_step_that_ran_lands() -> None:
    store = _fold([
        _created(), _requested(), _msg(StepStarted, 3, step="plan", index=1, total=5),
        AnalysisSettled(event_id="e4", at=T0, session_id="s1", message_id="m1",
                        status="cancelled"),
        _msg(LogAppended, 5, text="plan stopped", step="plan"),
        _msg(LogAppended, 6, text="never ran", step="execute"),
        _msg(LogAppended, 7, text="no step"),
    ])  # fmt: skip
    assert [row["text"] for row in store.appends["message_logs"]] == ["plan stopped"]
    assert sorted(row["seq"] for row in store.appends["poison_events"]) == [6, 7]


def test_the_result_carries_the_plans_interpretation_and_is_never_loaded_back() -> None:
    store = _fold([
        _created(), _requested(),
        _msg(ScriptGenerated, 3, sql="select 1", explanation="e", planner="rules",
             interpretation="the number of rows"),
        _msg(ExecutionCompleted, 4, columns=[Column(name="n", type="int")], rows=[[3]],
             row_count=1),
    ])  # fmt: skip
    assert store.messages["m1"]["result"]["interpretation"] == "the number of rows"
    store = _fold([_msg(LogAppended, 5, text="after")], store)
    assert store.messages["m1"]["result"]["rows"] == [[3]]  # kept by the writer
    state = store.load(Batch(items([_msg(LogAppended, 6, text="x")])).keys)
    assert "result" not in state.messages.rows["m1"]


def test_a_chart_completed_after_a_cancel_is_not_shown() -> None:
    chart = {"session_id": "s1", "task_id": "t1", "message_id": "m1"}
    store = _fold([
        _created(), _requested(),
        ChartRequested(event_id="e3", at=T0, **chart),
        ChartCancelled(event_id="e4", at=T0, **chart),
        ChartCompleted(event_id="e5", at=T0, chart_id="c1", kind="bar", **chart),
        ChartFailed(event_id="e6", at=T0, error="late", **chart),
    ])  # fmt: skip
    assert store.tasks["t1"]["status"] == "cancelled"
    assert store.appends["charts"] == []
    assert store.tasks["t1"]["last_seq"] == 6


def test_a_session_event_without_a_lock_releases_it() -> None:
    store = _fold([_created(), _requested()])
    assert "s1" in store.locks
    store = _fold([AnalysisSettled(event_id="e9", at=T0, session_id="s1", message_id="m1",
                                   status="completed")], store)
    assert store.locks == {}


def test_last_writer_wins_per_row_within_a_batch() -> None:
    state = State()
    state.sessions = Table({"s1": None})
    Batch(items([_created(), SessionRead(event_id="r", at=T0 + timedelta(1), session_id="s1",
                                         owner="alice")])).fold_into(state)
    assert state.sessions.dirty == {"s1"}
    assert state.sessions.rows["s1"]["last_read_at"] == T0 + timedelta(1)  # type: ignore[index]
    assert state.sessions.rows["s1"]["last_activity_at"] == T0 + timedelta(1)  # type: ignore[index]


def test_a_session_is_named_by_its_owner_or_else_by_its_first_question() -> None:
    unnamed = SessionCreated(event_id="c", at=T0, session_id="s1", owner="alice")
    long_question = "what is the average revenue per region " * 4
    ask = AnalysisRequested(event_id="r", at=T0, session_id="s1", message_id="m1",
                            user_message_id="u1", owner="alice", question=long_question)
    store = _fold([unnamed, ask])
    title = store.sessions["s1"]["title"]
    assert title.endswith("…") and len(title) <= 80 and long_question.startswith(title[:-1])
    store = _fold([SessionRenamed(event_id="n", at=T0, session_id="s1", owner="alice",
                                  title="Regions")], store)
    assert store.sessions["s1"]["title"] == "Regions"
    again = AnalysisRequested(event_id="r2", at=T0, session_id="s1", message_id="m2",
                              user_message_id="u2", owner="alice", question="other")
    assert _fold([again], store).sessions["s1"]["title"] == "Regions"
