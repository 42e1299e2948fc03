"""runtime.clock: a box without a real-time clock that boots in the past is told so, from what it
knows has already happened (its model's making, its newest stored record), in the terminal and in
the kiosk's state; a plausible clock is left alone."""

from __future__ import annotations

import contextlib
import io
import sqlite3
import time
from datetime import datetime, timedelta, timezone

from kiosk_fixtures import kiosk_process
from runtime.cli import main as pcg_runtime
from runtime.clock import TOLERANCE, clock_warning, newest_record
from runtime.store import Store

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=timezone.utc)


def test_a_clock_earlier_than_the_model_or_the_records_is_wrong():
    assert clock_warning(NOW, model_created="2026-12-01T00:00:00Z", newest_record=None) is None
    booted = clock_warning(datetime(1970, 1, 1, tzinfo=timezone.utc), model_created="2026-12-01T00:00:00Z", newest_record=None)
    assert booted["code"] == "before_model" and booted["now"].startswith("1970-01-01")
    assert "1970-01-01 00:00 UTC, earlier than the model was made (2026-12-01 00:00 UTC)" in booted["message"]
    later = (NOW + timedelta(days=3)).isoformat()
    behind = clock_warning(NOW, model_created="2026-12-01T00:00:00Z", newest_record=later)
    assert behind["code"] == "before_records" and behind["not_before"].startswith("2026-12-09")
    # a clock set by hand a little behind the last record is not a box living in another year
    assert clock_warning(NOW, model_created=None, newest_record=(NOW + TOLERANCE / 2).isoformat()) is None
    assert clock_warning(NOW, model_created="not a date", newest_record=None) is None


def _screen_one(db, *extra) -> str:
    errors = io.StringIO()
    with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
        assert pcg_runtime(["--device", "sim", "--seconds", "6", "--speed", "40", "--db", str(db), "--consent", "--json",
                            *extra]) == 0
    return errors.getvalue()


def test_the_terminal_and_the_kiosk_say_when_the_clock_is_behind_the_store(tmp_path):
    db = tmp_path / "db"
    assert "clock" not in _screen_one(db)  # a right clock: nothing said
    with Store.open(db, read_only=True) as store:
        newest = datetime.fromisoformat(newest_record(store))
    assert abs(newest - datetime.now(timezone.utc)) < timedelta(minutes=1)
    # the records of a box whose clock was right, then lost on a power cut: they now lie in its future
    with sqlite3.connect(db / "store.sqlite") as conn:
        conn.execute("UPDATE sessions SET created_at = '2031-05-01T08:00:00.000+00:00'")
    said = _screen_one(db)
    assert "WARNING: the box's clock reads" in said and "earlier than the newest record" in said and "2031-05-01" in said
    with kiosk_process("--device", "sim", "--db", str(db), "--seconds", "6") as kiosk:
        for _ in range(50):
            status, _, state = kiosk.request("GET", "/api/state")
            if state.get("clock"):  # set once the box has looked at its store
                break
            time.sleep(0.1)
        assert status == 200 and state["clock"]["code"] == "before_records"
        assert state["clock"]["not_before"].startswith("2031-05-01")
