import json
from pathlib import Path

import msgspec
import pytest

from runstream.contracts import (
    ALL_EVENTS,
    EVENT_TYPES,
    AnalysisRequested,
    AnalysisSettled,
    ChartCompleted,
    DecodeError,
    InvalidId,
    InvalidSubject,
    Lock,
    LogAppended,
    Subjects,
    decode,
    derived_id,
    encode,
    is_valid_id,
    json_schema,
    new_id,
    type_of,
    utcnow,
    validate_id,
)

ROOT = Path(__file__).resolve().parents[4]


def test_new_ids_are_valid_uuid7_and_time_ordered():
    ids = [new_id() for _ in range(200)]
    assert all(is_valid_id(i) for i in ids)
    assert all(i[14] == "7" for i in ids)
    assert len(set(ids)) == 200
    assert [i[:13] for i in ids] == sorted(i[:13] for i in ids)


@pytest.mark.parametrize("bad", ["a.b", "a*", "a>b", "has space", "tab\t", "", "x" * 65, 3, None])
def test_ids_that_could_break_a_subject_are_rejected(bad):
    assert not is_valid_id(bad)
    with pytest.raises(InvalidId):
        validate_id(bad)


def test_derived_ids_are_deterministic():
    assert derived_id("m", 1, "plan") == derived_id("m", 1, "plan")
    assert derived_id("m", 1, "plan") != derived_id("m", 2, "plan")


def test_every_event_type_has_a_unique_tag():
    tags = [type_of(cls) for cls in ALL_EVENTS]
    assert len(tags) == len(set(tags)) == len(EVENT_TYPES)
    assert {"session_created", "analysis_settled", "step_started", "chart_cancelled"} <= set(tags)


def test_an_event_round_trips_and_carries_its_type_tag():
    now = utcnow()
    lock = Lock(message_id="m1", acquired_at=now, expires_at=now)
    event = AnalysisRequested(
        event_id=new_id(), at=now, session_id="s1", lock=lock, message_id="m1",
        user_message_id="u1", owner="alice", question="how many rows?",
    )
    raw = encode(event)
    assert json.loads(raw)["type"] == "analysis_requested"
    assert decode(raw) == event


def test_old_readers_skip_fields_they_do_not_know():
    raw = json.dumps({
        "type": "log_appended", "event_id": "e", "at": "2026-01-01T00:00:00Z",
        "session_id": "s", "message_id": "m", "text": "hi", "added_later": {"x": 1},
    }).encode()
    event = decode(raw)
    assert isinstance(event, LogAppended) and event.text == "hi" and event.level == "info"


@pytest.mark.parametrize("raw", [b"not json", b'{"type":"nope"}', b'{"type":"log_appended"}'])
def test_undecodable_bytes_raise_decode_error(raw):
    with pytest.raises(DecodeError):
        decode(raw)


def test_subjects_are_built_and_parsed_back():
    s = Subjects("rs")
    assert s.session("s1") == "rs.s1.session"
    assert s.message("s1", "m1", "step_started") == "rs.s1.msg.m1.step_started"
    assert s.chart("s1", "t1", "chart_requested") == "rs.s1.chart.t1.chart_requested"
    assert s.message_all("m1") == "rs.*.msg.m1.>"
    parts = s.parse("rs.s1.msg.m1.step_started")
    assert (parts.session_id, parts.aggregate, parts.entity_id, parts.event_type) == (
        "s1", "msg", "m1", "step_started")
    assert s.parse("rs.s1.session").aggregate == "session"
    with pytest.raises(InvalidSubject):
        s.parse("other.s1.session")
    with pytest.raises(InvalidId):
        s.session("s.1")


def test_events_know_their_subject():
    s = Subjects("t1.rs")
    now = utcnow()
    settled = AnalysisSettled(event_id="e", at=now, session_id="s", message_id="m", status="failed")
    chart = ChartCompleted(event_id="e", at=now, session_id="s", task_id="t", message_id="m",
                           chart_id="c", kind="bar")
    assert s.for_event(settled) == "t1.rs.s.session"
    assert s.for_event(chart) == "t1.rs.s.chart.t.chart_completed"
    assert s.parse(s.for_event(chart)).entity_id == "t"


def test_committed_json_schema_is_up_to_date():
    committed = ROOT / "proto" / "events.schema.json"
    assert committed.exists(), "run `make proto`"
    current = json.loads(msgspec.json.encode(json_schema()))
    assert json.loads(committed.read_text()) == current, "proto/ is stale: run `make proto`"
