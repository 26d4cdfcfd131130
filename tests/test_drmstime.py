"""JSOC time strings: every accepted form and zone, leap seconds, round trips."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jsocmirror import drmstime
from jsocmirror.drmstime import format_time, parse_duration, parse_time


@pytest.mark.parametrize(
    ("text", "tai"),
    [
        ("2014.01.01_00:00:00_TAI", "2014.01.01_00:00:00_TAI"),
        ("2014.01.01_00:00_TAI", "2014.01.01_00:00:00_TAI"),
        ("2014.01.01_TAI", "2014.01.01_00:00:00_TAI"),
        ("2014.1.1", "2014.01.01_00:00:35_TAI"),  # no zone means UTC
        ("2014.01.01", "2014.01.01_00:00:35_TAI"),
        ("2014-01-01", "2014.01.01_00:00:35_TAI"),
        ("2014-01-01T00:00:00Z", "2014.01.01_00:00:35_TAI"),
        ("2014-01-01T00:00:00", "2014.01.01_00:00:35_TAI"),
        ("2014.01.01_00:00:00_UTC", "2014.01.01_00:00:35_TAI"),
        ("2014.01.01_00:00:00_UT", "2014.01.01_00:00:35_TAI"),
        ("2014.01.01 00:00:00", "2014.01.01_00:00:35_TAI"),
        ("2014.01.01_01:00:00+0100", "2014.01.01_00:00:35_TAI"),
        ("2013.12.31_17:00:00-0700", "2014.01.01_00:00:35_TAI"),
        ("2014.01.01_00:00:32.184_TDT", "2014.01.01_00:00:00_TAI"),
        ("2025-01-01T04:33:30.000", "2025.01.01_04:34:07_TAI"),
        ("JD_2456658.5", "2014.01.01_00:00:35_TAI"),
        ("MJD_56658", "2014.01.01_00:00:35_TAI"),
        ("JD_2456658.5_TAI", "2014.01.01_00:00:00_TAI"),
        ("1993.01.01_00:00:00_TAI", "1993.01.01_00:00:00_TAI"),
        ("2010.05.13_00:00:00_UTC", "2010.05.13_00:00:34_TAI"),
    ],
)
def test_parse_time_every_form_and_zone(text, tai):
    assert format_time(parse_time(text), "TAI") == tai


def test_parse_time_1993_epoch_and_fractions():
    assert parse_time("1993.01.01_00:00:00_TAI") == drmstime.EPOCH_1993
    assert parse_time("1977.01.01_00:00:00_TAI") == 0.0
    t = parse_time("2014.01.01_00:00:00.25_TAI")
    assert format_time(t, "TAI", 2) == "2014.01.01_00:00:00.25_TAI"
    assert format_time(parse_time("2014-01-01T00:00:07.12Z"), "ISO", 2) == "2014-01-01T00:00:07.12Z"


@pytest.mark.parametrize(
    ("before", "after", "dat_before", "dat_after"),
    [
        ("2012.06.30_23:59:59_UTC", "2012.07.01_00:00:00_UTC", 34, 35),
        ("2015.06.30_23:59:59_UTC", "2015.07.01_00:00:00_UTC", 35, 36),
        ("2016.12.31_23:59:59_UTC", "2017.01.01_00:00:00_UTC", 36, 37),
    ],
)
def test_parse_time_leap_second_boundaries(before, after, dat_before, dat_after):
    t0, t1 = parse_time(before), parse_time(after)
    assert t1 - t0 == 2.0  # the inserted second 23:59:60 lies between them
    assert drmstime.tai_minus_utc_at_tai(t0) == dat_before and drmstime.tai_minus_utc_at_tai(t1) == dat_after
    leap = before.replace(":59_UTC", ":60_UTC")
    assert parse_time(leap) == t0 + 1.0
    assert format_time(t0 + 1.0, "UTC") == leap
    assert format_time(t0 + 1.5, "UTC", 1) == leap.replace(":60_UTC", ":60.5_UTC")
    iso = format_time(t0 + 1.0, "ISO")
    assert iso.endswith("T23:59:60Z") and parse_time(iso) == t0 + 1.0
    assert format_time(t1, "UTC") == after
    assert format_time(t0 + 1.7, "UTC") == after  # rounds into the new day, not to :61


def test_tai_minus_utc_at_utc_follows_leap_table():
    assert drmstime.tai_minus_utc_at_utc(drmstime.calendar_seconds(2010, 1, 1)) == 34
    assert drmstime.tai_minus_utc_at_utc(drmstime.calendar_seconds(2013, 1, 1)) == 35
    assert drmstime.tai_minus_utc_at_utc(drmstime.calendar_seconds(2016, 1, 1)) == 36
    assert drmstime.tai_minus_utc_at_utc(drmstime.calendar_seconds(2024, 7, 1)) == 37


@pytest.mark.parametrize(
    ("text", "zone", "precision"),
    [
        ("2012.01.01_00:00:45_TAI", "TAI", 0),
        ("2012.01.01_00:00:10_UTC", "UTC", 0),
        ("2014-01-01T00:00:01Z", "ISO", 0),
        ("2010-07-30T13:30:02Z", "ISO", 0),
        ("2014-01-01T00:00:08.57Z", "ISO", 2),
        ("1999.12.31_23:59:59.500_TAI", "TAI", 3),
        ("2024.06.28_00:00:00_TAI", "TAI", 0),
        ("1980.02.29_12:00:00_UTC", "UTC", 0),
        ("2000-02-29T00:00:00Z", "ISO", 0),
    ],
)
def test_format_time_round_trips(text, zone, precision):
    assert format_time(parse_time(text), zone, precision) == text


def test_format_time_missing_and_compact():
    missing = parse_time("-4712.01.01_11:59:28_TAI")
    assert drmstime.is_missing(missing) and missing == drmstime.MISSING_TIME
    assert format_time(missing, "TAI") == "-4712.01.01_11:59:28_TAI"
    assert format_time(missing, "ISO") == "-4712.01.01_11:59:28Z"
    t = parse_time("2012.01.01_01:01:30_TAI")
    assert drmstime.format_time_compact(t, "TAI") == "20120101_010130_TAI"
    assert drmstime.format_time_compact(parse_time("2010-07-30T13:30:09Z"), "ISO") == "2010-07-30T133009Z"


@pytest.mark.parametrize(
    "text", ["", "garbage", "2014.13.01", "2014.01.32", "2014.01.01_25:00", "2014.01.01_00:61", "2014/01", "JD_x"]
)
def test_parse_time_rejects_bad_text(text):
    with pytest.raises(ValueError, match="not a JSOC time"):
        parse_time(text)


def test_format_time_rejects_unknown_zone():
    with pytest.raises(ValueError, match="unknown time zone"):
        format_time(0.0, "PST")


def test_parse_duration_units_and_errors():
    assert parse_duration("90.0s") == 90.0
    assert parse_duration("3m") == 180.0 and parse_duration("6h") == 21600.0 and parse_duration("1d") == 86400.0
    assert parse_duration("45") == 45.0 and parse_duration("5u", step=12.0) == 60.0
    with pytest.raises(ValueError, match="slots"):
        parse_duration("5u")
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("5 weeks")


def test_from_datetime_round_trips():
    dt = datetime(2015, 6, 30, 12, 0, 0, 250000, tzinfo=timezone.utc)
    t = drmstime.from_datetime(dt)
    assert format_time(t, "TAI", 2) == "2015.06.30_12:00:35.25_TAI"
    assert drmstime.to_datetime_utc(t) == dt
    assert drmstime.to_datetime_utc(drmstime.MISSING_TIME) is None


internal_times = st.integers(min_value=-10**9, max_value=2 * 10**9).map(lambda ms: ms / 1.0)
millis = st.integers(min_value=-(10**12), max_value=2 * 10**12).map(lambda ms: ms / 1000.0)


@settings(max_examples=300, deadline=None)
@given(t=internal_times, zone=st.sampled_from(["TAI", "UTC", "ISO"]))
def test_format_time_then_parse_time_is_identity_on_whole_seconds(t, zone):
    assert parse_time(format_time(t, zone)) == t


@settings(max_examples=300, deadline=None)
@given(t=millis, zone=st.sampled_from(["TAI", "UTC", "ISO"]))
def test_format_time_then_parse_time_keeps_milliseconds(t, zone):
    assert parse_time(format_time(t, zone, 3)) == pytest.approx(t, abs=6e-4)


@settings(max_examples=100, deadline=None)
@given(leap=st.sampled_from(["2012.07.01", "2015.07.01", "2017.01.01"]), offset=st.integers(-3, 3))
def test_format_time_then_parse_time_is_identity_around_leap_seconds(leap, offset):
    t = parse_time(leap + "_00:00:00_UTC") + offset
    for zone in ("TAI", "UTC", "ISO"):
        assert parse_time(format_time(t, zone)) == t


def test_calendar_functions_agree_on_ints_and_numpy_arrays():
    """The emulator and sync convert whole columns with the same code drmstime uses per value."""
    import datetime as _dt

    import numpy as np

    days = np.arange(-800_000, 800_000, 997, dtype=np.int64)
    years, months, mdays = drmstime.civil_from_days(days)
    for z, y, m, d in zip(days[::50].tolist(), years[::50], months[::50], mdays[::50]):
        assert drmstime.civil_from_days(z) == (y, m, d)
        assert drmstime.days_from_civil(int(y), int(m), int(d)) == z
    assert (drmstime.days_from_civil(years, months, mdays) == days).all()
    epoch = _dt.date(1970, 1, 1)
    for z in (-719_162, 0, 2557, 10_957, 19_723, 2_932_896):  # 0001-01-01 .. 9999-12-31
        date = epoch + _dt.timedelta(days=z)
        assert drmstime.civil_from_days(z) == (date.year, date.month, date.day)
