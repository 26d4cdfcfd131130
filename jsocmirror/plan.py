"""The planner: turn the gap set from the diff into as few JSOC record-set queries as the limits allow.

Pure: no I/O, no SQL, no network. Input is a list of gaps (series, record key, segment, and an
optional size estimate); output is a list of ``PlannedQuery``, each a record-set string that selects
exactly some of the gap records (never a record outside the gap set) and carrying the record keys it
covers, so later stages can check what came back.

How a query is built (DATA_MODEL.md section 2):

- gaps are grouped by series and by the set of segments wanted per record, which becomes ``{seg,...}``;
- the *run key* is the first slotted prime key (T_REC) or else the first integer prime key; every
  other prime key becomes a list (``[171,193]``);
- along the run key, consecutive slots become ranges ``a-b``, regularly spaced slots ``a-b@Ns``, and
  the rest comma lists;
- each query stays under the per-request caps: records (LANDSCAPE (d): ~15k AIA / 30k HMI advised),
  estimated bytes (100 GB straight-export cap) and length of the record-set string (it travels in a
  GET URL).

Two ways of grouping the non-run keys are tried (combos sharing the same slots, or slots sharing the
same combos) and the one giving fewer queries wins. When the caller names an integer prime key that
identifies a record on its own (``PlanLimits.unique_keys``: aia.lev1's FSN, whose records share T_REC
slots but never an FSN), a third way lists that key's values under one covering range of the run key,
and is taken when it needs fewer queries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import product
from typing import Any, Iterable, Mapping, Sequence

from jsocmirror import recordset
from jsocmirror.errors import RecordSetError, UsageError
from jsocmirror.series import SeriesDef

#: 100 GB: jsoc_fetch's cap for straight (uncompressed) exports (LANDSCAPE (d)).
DEFAULT_MAX_BYTES = 100 * 10**9
#: JSOC's export form advises ~15k AIA / ~30k HMI records per request (DATA_MODEL section 4).
DEFAULT_MAX_RECORDS_AIA = 15_000
DEFAULT_MAX_RECORDS_OTHER = 30_000
#: A record set travels in a GET query string; stay well inside common 8 KiB URL limits.
DEFAULT_MAX_QUERY_CHARS = 4_000
#: Used when neither the gap nor the caller knows a record's size.
DEFAULT_BYTES_PER_SEGMENT = 16 * 2**20



@dataclass(frozen=True)
class Gap:
    """One (record, segment) the mirror lacks. ``size`` is an estimate in bytes, or None."""

    series: str
    record_key: str
    segment: str
    size: int | None = None
    recnum: int | None = None  # the catalog's RECNUM (what the file should be), when known

    @classmethod
    def from_row(cls, row: Any) -> Gap:
        """A gap from a diff row: a mapping or an object with series/record_key/segment(/size)."""
        get = row.get if isinstance(row, Mapping) else (lambda name, default=None: getattr(row, name, default))
        size = get("size", None)
        if size is None:
            size = get("est_bytes", None)
        return cls(str(get("series")), str(get("record_key")), str(get("segment")),
                   int(size) if size not in (None, "") else None)


@dataclass(frozen=True)
class PlanLimits:
    """Per-request caps. ``max_records=None`` picks JSOC's advice for the series (AIA 15k, else 30k)."""

    max_records: int | None = None
    max_bytes: int = DEFAULT_MAX_BYTES
    max_query_chars: int = DEFAULT_MAX_QUERY_CHARS
    bytes_per_segment: int = DEFAULT_BYTES_PER_SEGMENT
    #: (series, prime key) pairs: an integer prime key whose value identifies a record on its own
    #: (aia.lev1's FSN). The caller vouches for it (``Catalog.unique_prime_keys`` checks the catalog).
    unique_keys: tuple[tuple[str, str], ...] = ()

    def unique_key(self, series: str) -> str | None:
        return next((key for name, key in self.unique_keys if name.lower() == series.lower()), None)

    def records_for(self, series: str) -> int:
        if self.max_records is not None:
            if self.max_records < 1:
                raise UsageError(f"max_records must be at least 1, not {self.max_records}")
            return self.max_records
        return DEFAULT_MAX_RECORDS_AIA if series.lower().startswith("aia.") else DEFAULT_MAX_RECORDS_OTHER


@dataclass(frozen=True)
class PlannedQuery:
    """One record-set query: ``recordset`` selects exactly ``record_keys`` (with ``segments``)."""

    series: str
    recordset: str
    segments: tuple[str, ...]
    record_keys: tuple[str, ...]
    est_bytes: int

    @property
    def n_records(self) -> int:
        return len(self.record_keys)


@dataclass
class Plan:
    queries: list[PlannedQuery] = field(default_factory=list)

    @property
    def n_records(self) -> int:
        return sum(q.n_records for q in self.queries)

    @property
    def est_bytes(self) -> int:
        return sum(q.est_bytes for q in self.queries)

    def by_series(self) -> dict[str, list[PlannedQuery]]:
        out: dict[str, list[PlannedQuery]] = {}
        for query in self.queries:
            out.setdefault(query.series, []).append(query)
        return out




# -- the run axis -------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Axis:
    """How values of the run key map to integer positions (slot indices) and back to text."""

    definition: SeriesDef
    index: int  # position of the run key among the prime keys
    key: str
    slotted: bool

    def position(self, text: str) -> int:
        if not self.slotted:
            return int(text, 0)
        return recordset.slot_of_value(self.definition, self.key, text)

    def range_text(self, first: int, last: int, stride: int) -> str:
        if self.slotted:
            return recordset.format_range(self.definition, self.key, first, last, stride if stride > 1 else None)
        if first == last:
            return str(first)
        # DRMS takes @n on a plain integer key as every n-th value.
        return f"{first}-{last}" + (f"@{stride}" if stride > 1 else "")


def _run_axis(definition: SeriesDef) -> _Axis | None:
    for i, kw in enumerate(definition.primekey_keywords):
        if kw.name in definition.slottings:
            return _Axis(definition, i, kw.name, True)
    for i, kw in enumerate(definition.primekey_keywords):
        if kw.is_int:
            return _Axis(definition, i, kw.name, False)
    return None


def compress_positions(positions: Sequence[int]) -> list[tuple[int, int, int]]:
    """Sorted distinct positions -> (first, last, stride) items: runs, regular strides, singles.

    Greedy: from each position take the longest arithmetic progression; a stride-1 run of two or
    more, or any progression of three or more, becomes a range; everything else stays single.
    """
    items: list[tuple[int, int, int]] = []
    i, n = 0, len(positions)
    while i < n:
        if i + 1 < n:
            stride = positions[i + 1] - positions[i]
            j = i + 1
            while j + 1 < n and positions[j + 1] - positions[j] == stride:
                j += 1
            length = j - i + 1
            if (stride == 1 and length >= 2) or length >= 3:
                items.append((positions[i], positions[j], stride))
                i = j + 1
                continue
        items.append((positions[i], positions[i], 1))
        i += 1
    return items


def _count_items(items: Iterable[tuple[int, int, int]]) -> int:
    return sum((last - first) // stride + 1 for first, last, stride in items)


# -- planning --------------------------------------------------------------------------------
def plan_gaps(gaps: Iterable[Any], definitions: Mapping[str, SeriesDef] | Any,
              limits: PlanLimits | None = None) -> Plan:
    """Plan record-set queries covering exactly ``gaps``.

    ``definitions`` maps series names to ``SeriesDef`` (a ``SeriesRegistry`` works too: anything
    with ``get(name)``). Gaps may be ``Gap`` objects or diff rows (see ``Gap.from_row``).
    """
    limits = limits or PlanLimits()
    wanted: dict[str, dict[str, dict[str, int | None]]] = {}
    for raw in gaps:
        gap = raw if isinstance(raw, Gap) else Gap.from_row(raw)
        segs = wanted.setdefault(gap.series, {}).setdefault(gap.record_key, {})
        segs[gap.segment] = gap.size
    plan = Plan()
    for series in sorted(wanted, key=str.lower):
        definition = _lookup(definitions, series)
        plan.queries.extend(_plan_series(definition, wanted[series], limits))
    return plan


def _lookup(definitions: Any, series: str) -> SeriesDef:
    definition = definitions.get(series)
    if definition is None and hasattr(definitions, "items"):
        definition = next((d for name, d in definitions.items() if name.lower() == series.lower()), None)
    if definition is None:
        raise UsageError(f"no series definition for {series!r}; cannot plan its gaps")
    return definition


def _plan_series(definition: SeriesDef, records: dict[str, dict[str, int | None]],
                 limits: PlanLimits) -> list[PlannedQuery]:
    segment_order = {s.name: i for i, s in enumerate(definition.segments)}
    by_segments: dict[tuple[str, ...], list[str]] = {}
    for key, segs in records.items():
        ordered = tuple(sorted(segs, key=lambda s: (segment_order.get(s, len(segment_order)), s)))
        by_segments.setdefault(ordered, []).append(key)
    axis = _run_axis(definition)
    queries: list[PlannedQuery] = []
    for segments, keys in sorted(by_segments.items()):
        sizes = {k: sum(v if v is not None else limits.bytes_per_segment for v in records[k].values())
                 for k in keys}
        queries.extend(_plan_group(definition, axis, segments, keys, sizes, limits))
    return queries


def _plan_group(definition: SeriesDef, axis: _Axis | None, segments: tuple[str, ...], keys: list[str],
                sizes: dict[str, int], limits: PlanLimits) -> list[PlannedQuery]:
    npk = len(definition.primekeys)
    split = {k: recordset.split_record_key(k) for k in keys}
    for key, values in split.items():
        if len(values) != npk:
            raise UsageError(f"record key {key!r} has {len(values)} values; {definition.name} has prime keys "
                             f"{', '.join(definition.primekeys)}")
    if axis is None:
        return _plan_explicit(definition, segments, keys, split, sizes, limits)
    unique = limits.unique_key(definition.name)
    if unique is not None and unique.upper() != axis.key.upper():
        by_products = _plan_products(definition, axis, segments, keys, split, sizes, limits)  # validates keys
        by_unique = _plan_by_unique_key(definition, axis, unique, segments, keys, split, sizes, limits)
        return by_unique if len(by_unique) < len(by_products) else by_products
    return _plan_products(definition, axis, segments, keys, split, sizes, limits)


def _plan_products(definition: SeriesDef, axis: _Axis, segments: tuple[str, ...], keys: list[str],
                   split: dict[str, list[str]], sizes: dict[str, int], limits: PlanLimits) -> list[PlannedQuery]:
    try:
        positions = {k: axis.position(v[axis.index]) for k, v in split.items()}
    except (ValueError, RecordSetError) as exc:
        raise UsageError(f"{definition.name}: {exc}") from None
    # (combo of the other prime keys) -> position -> record key
    cells: dict[tuple[str, ...], dict[int, str]] = {}
    for key, values in split.items():
        combo = tuple(values[:axis.index] + values[axis.index + 1:])
        cells.setdefault(combo, {})[positions[key]] = key
    by_combo = _group(cells)  # combos that share exactly the same positions
    by_position = _group_transposed(cells)  # positions that share exactly the same combos
    candidates = []
    for blocks in (by_combo, by_position):
        queries = []
        for combos, pos_list in blocks:
            queries.extend(_emit_block(definition, axis, segments, combos, pos_list, cells, sizes, limits))
        candidates.append(queries)
    return min(candidates, key=len)


def _group(cells: dict[tuple[str, ...], dict[int, str]]) -> list[tuple[list[tuple[str, ...]], list[int]]]:
    shared: dict[tuple[int, ...], list[tuple[str, ...]]] = {}
    for combo, by_pos in cells.items():
        shared.setdefault(tuple(sorted(by_pos)), []).append(combo)
    return [(sorted(combos), list(pos)) for pos, combos in shared.items()]


def _group_transposed(cells: dict[tuple[str, ...], dict[int, str]]) -> list[tuple[list[tuple[str, ...]], list[int]]]:
    by_pos: dict[int, set[tuple[str, ...]]] = {}
    for combo, positions in cells.items():
        for pos in positions:
            by_pos.setdefault(pos, set()).add(combo)
    shared: dict[tuple[tuple[str, ...], ...], list[int]] = {}
    for pos, combos in by_pos.items():
        shared.setdefault(tuple(sorted(combos)), []).append(pos)
    return [(list(combos), sorted(pos)) for combos, pos in shared.items()]


def _split_into_products(combos: list[tuple[str, ...]]) -> list[list[tuple[str, ...]]]:
    """Split combos into sets that are each a full Cartesian product of per-key value lists.

    With one non-run prime key (the usual case) any set of combos is a product. With more, combos
    are grouped by all but their last key; each group is a product (prefix x list of last values).
    """
    if not combos or len(combos[0]) <= 1:
        return [combos]
    values = [sorted({c[i] for c in combos}) for i in range(len(combos[0]))]
    if len(combos) == len(set(product(*values))):
        return [combos]
    by_prefix: dict[tuple[str, ...], list[tuple[str, ...]]] = {}
    for combo in combos:
        by_prefix.setdefault(combo[:-1], []).append(combo)
    return list(by_prefix.values())


def _emit_block(definition: SeriesDef, axis: _Axis, segments: tuple[str, ...],
                combos: list[tuple[str, ...]], positions: list[int],
                cells: dict[tuple[str, ...], dict[int, str]], sizes: dict[str, int],
                limits: PlanLimits) -> list[PlannedQuery]:
    queries = []
    max_records = limits.records_for(definition.name)
    for product_combos in _split_into_products(combos):
        per_position = len(product_combos)
        if per_position > max_records:
            # Too many combos for one request even for a single slot: one query per combo.
            for combo in product_combos:
                queries.extend(_emit_block(definition, axis, segments, [combo], positions, cells, sizes, limits))
            continue
        lists = [sorted({c[i] for c in product_combos}, key=_sort_key) for i in range(len(product_combos[0]))]
        chunk: list[int] = []
        chunk_bytes = 0

        def flush() -> None:
            if chunk:
                queries.extend(_emit_chunk(definition, axis, segments, lists, product_combos, list(chunk),
                                           cells, sizes, limits))

        for pos in positions:
            pos_bytes = sum(sizes[cells[c][pos]] for c in product_combos)
            too_many = (len(chunk) + 1) * per_position > max_records
            too_big = chunk and chunk_bytes + pos_bytes > limits.max_bytes
            if chunk and (too_many or too_big):
                flush()
                chunk, chunk_bytes = [], 0
            chunk.append(pos)
            chunk_bytes += pos_bytes
        flush()
    return queries


def _emit_chunk(definition: SeriesDef, axis: _Axis, segments: tuple[str, ...], lists: list[list[str]],
                combos: list[tuple[str, ...]], positions: list[int],
                cells: dict[tuple[str, ...], dict[int, str]], sizes: dict[str, int],
                limits: PlanLimits) -> list[PlannedQuery]:
    items = compress_positions(positions)
    run_text = ",".join(axis.range_text(first, last, stride) for first, last, stride in items)
    brackets = [",".join(values) for values in lists]
    brackets.insert(axis.index, run_text)
    text = definition.name + "".join(f"[{b}]" for b in brackets)
    if segments:
        text += "{" + ",".join(segments) + "}"
    if len(text) > limits.max_query_chars and len(positions) > 1:
        half = len(positions) // 2
        return (_emit_chunk(definition, axis, segments, lists, combos, positions[:half], cells, sizes, limits)
                + _emit_chunk(definition, axis, segments, lists, combos, positions[half:], cells, sizes, limits))
    keys = tuple(cells[c][p] for p in positions for c in combos)
    return [PlannedQuery(definition.name, text, segments, keys, sum(sizes[k] for k in keys))]


def _plan_by_unique_key(definition: SeriesDef, axis: _Axis, unique: str, segments: tuple[str, ...],
                        keys: list[str], split: dict[str, list[str]], sizes: dict[str, int],
                        limits: PlanLimits) -> list[PlannedQuery]:
    """Queries that list the unique key's values (compressed into ranges) under one covering range
    of the run key: ``aia.lev1[2024-06-30T00:00:00Z-2024-06-30T01:00:00Z][100001-100040,100044]``.

    Exact because each listed value belongs to one record only, and that record's other prime keys
    lie within the other brackets. Records go in order of the unique key, in chunks under the caps.
    (The catalog can vouch only for the records it mirrors: were a value shared upstream by a
    record outside the selection, the query would select that one too, and the stage, which never
    fetches what was not asked for, would leave it.)
    """
    names = [k.upper() for k in definition.primekeys]
    if unique.upper() not in names:
        raise UsageError(f"{definition.name}: unique key {unique!r} is not one of its prime keys "
                         f"({', '.join(definition.primekeys)})")
    u_index = names.index(unique.upper())
    try:
        values = {k: int(v[u_index], 0) for k, v in split.items()}
    except ValueError as exc:
        raise UsageError(f"{definition.name}: {unique} is not an integer in every record key ({exc})") from None
    ordered = sorted(keys, key=values.__getitem__)
    u_axis = _Axis(definition, u_index, unique, False)
    max_records = limits.records_for(definition.name)
    queries: list[PlannedQuery] = []
    chunk: list[str] = []
    chunk_bytes = 0
    for key in ordered:
        if chunk and (len(chunk) >= max_records or chunk_bytes + sizes[key] > limits.max_bytes):
            queries.extend(_emit_unique_chunk(definition, axis, u_axis, segments, chunk, split, values, sizes, limits))
            chunk, chunk_bytes = [], 0
        chunk.append(key)
        chunk_bytes += sizes[key]
    if chunk:
        queries.extend(_emit_unique_chunk(definition, axis, u_axis, segments, chunk, split, values, sizes, limits))
    return queries


def _emit_unique_chunk(definition: SeriesDef, axis: _Axis, u_axis: _Axis, segments: tuple[str, ...],
                       chunk: list[str], split: dict[str, list[str]], values: dict[str, int],
                       sizes: dict[str, int], limits: PlanLimits) -> list[PlannedQuery]:
    brackets = []
    for i in range(len(definition.primekeys)):
        if i == u_axis.index:
            items = compress_positions(sorted(values[k] for k in chunk))
            brackets.append(",".join(u_axis.range_text(first, last, stride) for first, last, stride in items))
        elif i == axis.index:
            positions = [axis.position(split[k][i]) for k in chunk]
            brackets.append(axis.range_text(min(positions), max(positions), 1))
        else:
            brackets.append(",".join(sorted({split[k][i] for k in chunk}, key=_sort_key)))
    text = definition.name + "".join(f"[{b}]" for b in brackets)
    if segments:
        text += "{" + ",".join(segments) + "}"
    if len(text) > limits.max_query_chars and len(chunk) > 1:
        half = len(chunk) // 2
        return (_emit_unique_chunk(definition, axis, u_axis, segments, chunk[:half], split, values, sizes, limits)
                + _emit_unique_chunk(definition, axis, u_axis, segments, chunk[half:], split, values, sizes, limits))
    return [PlannedQuery(definition.name, text, segments, tuple(chunk), sum(sizes[k] for k in chunk))]


def _plan_explicit(definition: SeriesDef, segments: tuple[str, ...], keys: list[str],
                   split: dict[str, list[str]], sizes: dict[str, int], limits: PlanLimits) -> list[PlannedQuery]:
    """A series with no slotted or integer prime key: one exact record per query item."""
    queries = []
    for key in sorted(keys):
        text = definition.name + key + ("{" + ",".join(segments) + "}" if segments else "")
        queries.append(PlannedQuery(definition.name, text, segments, (key,), sizes[key]))
    return queries


def _sort_key(text: str) -> tuple[int, float | str]:
    try:
        return (0, float(int(text, 0)))
    except ValueError:
        return (1, text)


# -- baselines (for tests and benchmarks) -----------------------------------------------------------
def per_record_query_count(gaps: Iterable[Any]) -> int:
    """How many queries a naive one-query-per-record plan would send."""
    return len({(g.series, g.record_key) for g in map(_as_gap, gaps)})


def per_run_query_count(gaps: Iterable[Any], definitions: Mapping[str, SeriesDef] | Any) -> int:
    """Queries of a one-query-per-run plan: each run of consecutive slots, per other-key combo."""
    cells: dict[tuple[str, tuple[str, ...]], set[int]] = {}
    for gap in map(_as_gap, gaps):
        definition = _lookup(definitions, gap.series)
        axis = _run_axis(definition)
        values = recordset.split_record_key(gap.record_key)
        if axis is None:
            cells.setdefault((gap.series, tuple(values)), set()).add(0)
            continue
        combo = tuple(values[:axis.index] + values[axis.index + 1:])
        cells.setdefault((gap.series, combo), set()).add(axis.position(values[axis.index]))
    runs = 0
    for positions in cells.values():
        ordered = sorted(positions)
        runs += 1 + sum(1 for a, b in zip(ordered, ordered[1:]) if b != a + 1)
    return runs


def _as_gap(raw: Any) -> Gap:
    return raw if isinstance(raw, Gap) else Gap.from_row(raw)
