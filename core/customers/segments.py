"""The segment language and its compiler to parameterised SQL.

A segment is a small JSON/YAML tree:

    {"all": [...]} | {"any": [...]} | {"not": {...}}
    {"attribute": "loyalty_tier", "op": "in", "value": ["gold", "platinum"]}
    {"consent": "email"}
    {"segment": "lapsed"}                                   # a named segment of the tenant
    {"purchased": {"category": "dairy", "within_days": 30}} # or "sku"
    {"no_purchase_in_days": 60}
    {"purchase_count": {"op": "gte", "value": 3, "within_days": 90}}
    {"total_spend": {"op": "gte", "value": 100, "within_days": 365}}
    {"performed": {"event": "Product Viewed", "where": {"category": "dairy", "price": {"op": "gte", "value": 5}},
                   "within_days": 7, "count": {"op": "gte", "value": 3}}}  # the event stream (track calls)

`{"all": []}` (or an empty mapping) is everyone. Values only ever travel as `$n`
parameters; identifiers come from the fixed attribute table below, never from input.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from core.common.validation import InvalidInput
from core.content.channels import CHANNELS

# attribute name -> (SQL expression over customers c, type)
ATTRIBUTES: dict[str, tuple[str, str]] = {
    "external_id": ("c.external_id", "text"),
    "email": ("c.email", "text"),
    "phone": ("c.phone", "text"),
    "first_name": ("c.first_name", "text"),
    "last_name": ("c.last_name", "text"),
    "locale": ("c.locale", "text"),
    "time_zone": ("c.time_zone", "text"),
    "loyalty_tier": ("c.loyalty_tier", "text"),
    "city": ("c.city", "text"),
    "country": ("c.country", "text"),
    "birth_date": ("c.birth_date", "date"),
    "created_at": ("c.created_at", "timestamp"),
    "consent_email": ("c.consent_email", "bool"),
    "consent_sms": ("c.consent_sms", "bool"),
    "consent_push": ("c.consent_push", "bool"),
}
CUSTOM_PREFIX = "attributes."
OPS = ("eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "exists", "contains")
# Consent a segment can test: the channels whose consent is a customers column.
_CONSENT_COLUMN = {name: f"c.{c.consent_column}" for name, c in CHANNELS.items() if c.consent_column}
_COMPARE = {"eq": "=", "ne": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_NODE_KEYS = (
    "all",
    "any",
    "not",
    "attribute",
    "consent",
    "segment",
    "purchased",
    "no_purchase_in_days",
    "purchase_count",
    "total_spend",
    "performed",
)


# Named segments may refer to each other, so a 1 KB config could expand tenfold per level (a
# segment naming the previous one ten times, five levels deep: 1.9 MB of SQL). Expansion stops
# at these bounds, far above any audience a marketer writes (tens of conditions).
MAX_SEGMENT_NODES = 2_000  # conditions after expanding named segments
MAX_SEGMENT_PARAMS = 1_000  # $n parameters of the compiled WHERE clause
MAX_SEGMENT_SQL = 64 * 1024  # characters of the compiled WHERE clause
# `performed`: property filters per condition, and how far back a window may reach.
MAX_PERFORMED_FILTERS = 20
MAX_WITHIN_DAYS = 3650
_PROPERTY_NAME = re.compile(r"^[A-Za-z0-9_.$ -]{1,100}$")


class _TooLarge(Exception):
    """Expansion went over a bound: stop at once instead of building the rest; `through` is
    the outermost named segment being expanded then, if any."""

    def __init__(self, reason: str, through: str | None = None):
        super().__init__(reason)
        self.through = through


class SegmentError(InvalidInput):
    """A segment that does not compile; `errors` holds every `path: reason` found."""


@dataclass
class CompiledSegment:
    """A WHERE-clause fragment over `customers c` and its parameters, numbered from 1."""

    where: str
    params: list[Any] = field(default_factory=list)


def _suggest(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


class _Compiler:
    def __init__(self, named: Mapping[str, Any], first_param: int):
        self.named = named
        self.params: list[Any] = []
        self.errors: list[str] = []
        self.first_param = first_param
        self._expanding: list[str] = []
        self.nodes = 0

    def param(self, value: Any) -> str:
        self.params.append(value)
        if len(self.params) > MAX_SEGMENT_PARAMS:
            raise _TooLarge(f"has more than {MAX_SEGMENT_PARAMS:,} parameters", next(iter(self._expanding), None))
        return f"${self.first_param + len(self.params) - 1}"

    def fail(self, path: str, reason: str) -> str:
        self.errors.append(f"{path}: {reason}")
        return "FALSE"

    def node(self, spec: Any, path: str) -> str:
        self.nodes += 1
        if self.nodes > MAX_SEGMENT_NODES:
            raise _TooLarge(f"expands to more than {MAX_SEGMENT_NODES:,} conditions", next(iter(self._expanding), None))
        if not isinstance(spec, Mapping):
            return self.fail(path, "must be a mapping")
        if not spec:
            return "TRUE"
        kind = next((k for k in _NODE_KEYS if k in spec), None)
        if kind is None:
            key = next(iter(spec))
            return self.fail(f"{path}.{key}", f"unknown segment key '{key}'{_suggest(str(key), list(_NODE_KEYS))}")
        if kind in ("all", "any"):
            self._only(spec, {kind}, path)
            items = spec[kind]
            if not isinstance(items, list):
                return self.fail(f"{path}.{kind}", "must be a list")
            parts = [self.node(item, f"{path}.{kind}[{i}]") for i, item in enumerate(items)]
            if not parts:
                return "TRUE" if kind == "all" else "FALSE"
            return "(" + (" AND " if kind == "all" else " OR ").join(parts) + ")"
        if kind == "not":
            self._only(spec, {"not"}, path)
            return f"(NOT {self.node(spec['not'], f'{path}.not')})"
        compile_node: Callable[[Mapping[str, Any], str], str] = getattr(self, f"_{kind}")
        return compile_node(spec, path)

    def _only(self, spec: Mapping[str, Any], allowed: set[str], path: str) -> None:
        for key in spec:
            if key not in allowed:
                self.fail(f"{path}.{key}", f"unexpected key '{key}'{_suggest(str(key), sorted(allowed))}")

    def _attribute(self, spec: Mapping[str, Any], path: str) -> str:
        self._only(spec, {"attribute", "op", "value"}, path)
        name = spec["attribute"]
        op = spec.get("op", "eq")
        if not isinstance(name, str):
            return self.fail(f"{path}.attribute", "must be a string")
        if name.startswith(CUSTOM_PREFIX) and name[len(CUSTOM_PREFIX) :].replace("_", "").isalnum():
            key = self.param(name[len(CUSTOM_PREFIX) :])
            expr, typ = f"(c.attributes ->> {key})", "custom"
        elif name in ATTRIBUTES:
            expr, typ = ATTRIBUTES[name]
        else:
            return self.fail(f"{path}.attribute", f"unknown attribute '{name}'{_suggest(name, list(ATTRIBUTES))}")
        if op not in OPS:
            return self.fail(f"{path}.op", f"unknown operator '{op}'{_suggest(str(op), list(OPS))}")
        value = spec.get("value", True if op == "exists" else None)
        vpath = f"{path}.value"
        if op == "exists":
            if not isinstance(value, bool):
                return self.fail(vpath, "must be true or false for 'exists'")
            non_empty = f" AND {expr} <> ''" if typ in ("text", "custom") else ""
            test = f"({expr} IS NOT NULL{non_empty})"
            return test if value else f"(NOT {test})"
        if op == "contains":
            if typ not in ("text", "custom") or not isinstance(value, str):
                return self.fail(vpath, "'contains' needs a text attribute and a string value")
            return f"(strpos(lower({expr}), lower({self.param(value)})) > 0)"
        if op in ("in", "not_in"):
            if not isinstance(value, list) or not value:
                return self.fail(vpath, f"'{op}' needs a non-empty list")
            converted = [self._convert(v, typ, f"{vpath}[{i}]") for i, v in enumerate(value)]
            cmp_expr = f"({expr})::numeric" if typ == "custom" and _all_numbers(value) else expr
            if typ == "custom":
                converted = [str(v) for v in converted] if cmp_expr == expr else converted
            test = f"({cmp_expr} = ANY({self.param(converted)}))"
            return test if op == "in" else f"(NOT coalesce({test}, FALSE))"
        if value is None:
            return self.fail(vpath, f"'{op}' needs a value")
        converted_value = self._convert(value, typ, vpath)
        if typ == "custom" and isinstance(converted_value, Decimal):
            return f"(({expr})::numeric {_COMPARE[op]} {self.param(converted_value)})"
        if typ == "custom":
            converted_value = str(converted_value)
        if op == "ne":
            return f"({expr} IS DISTINCT FROM {self.param(converted_value)})"
        return f"({expr} {_COMPARE[op]} {self.param(converted_value)})"

    def _convert(self, value: Any, typ: str, path: str) -> Any:
        try:
            if typ == "text":
                if not isinstance(value, str):
                    raise ValueError("must be a string")
                return value
            if typ == "bool":
                if not isinstance(value, bool):
                    raise ValueError("must be true or false")
                return value
            if typ == "date":
                return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))
            if typ == "timestamp":
                parsed = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
                return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
            # custom attributes: numbers compare numerically, everything else as text
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                raise ValueError("must be a string or a number")
            return Decimal(str(value)) if isinstance(value, int | float) else value
        except (ValueError, InvalidOperation) as exc:
            self.fail(path, f"{exc} (expected {typ})" if "must" in str(exc) else f"not a valid {typ}: {value!r}")
            return None

    def _consent(self, spec: Mapping[str, Any], path: str) -> str:
        self._only(spec, {"consent"}, path)
        channel = spec["consent"]
        if channel not in _CONSENT_COLUMN:
            return self.fail(f"{path}.consent", f"unknown channel '{channel}'; one of {', '.join(_CONSENT_COLUMN)}")
        return _CONSENT_COLUMN[channel]

    def _segment(self, spec: Mapping[str, Any], path: str) -> str:
        self._only(spec, {"segment"}, path)
        name = spec["segment"]
        if name not in self.named:
            return self.fail(f"{path}.segment", f"unknown segment '{name}'{_suggest(str(name), list(self.named))}")
        if name in self._expanding:
            return self.fail(f"{path}.segment", f"segment '{name}' refers to itself")
        self._expanding.append(name)
        try:
            return self.node(self.named[name], f"segments.{name}")
        finally:
            self._expanding.pop()

    def _window(self, body: Mapping[str, Any], path: str) -> tuple[list[str], str] | None:
        """Common filters of the purchase predicates: optional category/sku and within_days."""
        conds = ["p.tenant_id = c.tenant_id", "p.customer_id = c.id"]
        for key in ("category", "sku"):
            if key in body:
                if not isinstance(body[key], str):
                    self.fail(f"{path}.{key}", "must be a string")
                    return None
                conds.append(f"p.{key} = {self.param(body[key])}")
        if "within_days" in body:
            days = body["within_days"]
            if isinstance(days, bool) or not isinstance(days, int) or days < 1:
                self.fail(f"{path}.within_days", "must be a positive integer")
                return None
            conds.append(f"p.purchased_at >= now() - make_interval(days => {self.param(days)})")
        return conds, " AND ".join(conds)

    def _purchased(self, spec: Mapping[str, Any], path: str) -> str:
        self._only(spec, {"purchased"}, path)
        body, bpath = spec["purchased"], f"{path}.purchased"
        if not isinstance(body, Mapping):
            return self.fail(bpath, "must be a mapping")
        self._only(body, {"category", "sku", "within_days"}, bpath)
        window = self._window(body, bpath)
        return "FALSE" if window is None else f"EXISTS (SELECT 1 FROM purchases p WHERE {window[1]})"

    def _no_purchase_in_days(self, spec: Mapping[str, Any], path: str) -> str:
        self._only(spec, {"no_purchase_in_days"}, path)
        window = self._window({"within_days": spec["no_purchase_in_days"]}, path)
        return "FALSE" if window is None else f"NOT EXISTS (SELECT 1 FROM purchases p WHERE {window[1]})"

    def _aggregate(self, spec: Mapping[str, Any], path: str, kind: str, agg: str) -> str:
        self._only(spec, {kind}, path)
        body, bpath = spec[kind], f"{path}.{kind}"
        if not isinstance(body, Mapping):
            return self.fail(bpath, "must be a mapping")
        self._only(body, {"op", "value", "within_days", "category", "sku"}, bpath)
        op = body.get("op", "gte")
        if op not in _COMPARE:
            return self.fail(f"{bpath}.op", f"unknown operator '{op}'; one of {', '.join(_COMPARE)}")
        value = body.get("value")
        if isinstance(value, bool) or not isinstance(value, int | float):
            return self.fail(f"{bpath}.value", "must be a number")
        window = self._window(body, bpath)
        if window is None:
            return "FALSE"
        sub = f"(SELECT {agg} FROM purchases p WHERE {window[1]})"
        return f"({sub} {_COMPARE[op]} {self.param(Decimal(str(value)))})"

    def _purchase_count(self, spec: Mapping[str, Any], path: str) -> str:
        return self._aggregate(spec, path, "purchase_count", "count(*)::numeric")

    def _total_spend(self, spec: Mapping[str, Any], path: str) -> str:
        return self._aggregate(spec, path, "total_spend", "coalesce(sum(p.amount), 0)")

    def _performed(self, spec: Mapping[str, Any], path: str) -> str:
        """Customers whose stream holds the event (within the window, matching the property
        filters), at least once or as often as `count` says."""
        self._only(spec, {"performed"}, path)
        body, bpath = spec["performed"], f"{path}.performed"
        if not isinstance(body, Mapping):
            return self.fail(bpath, "must be a mapping")
        self._only(body, {"event", "where", "within_days", "count"}, bpath)
        name = body.get("event")
        if not isinstance(name, str) or not name or len(name) > 200:
            return self.fail(f"{bpath}.event", "must be an event name (1 to 200 characters)")
        conds = ["ev.tenant_id = c.tenant_id", "ev.customer_id = c.id", f"ev.event = {self.param(name)}"]
        if "within_days" in body:
            days = body["within_days"]
            if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_WITHIN_DAYS:
                return self.fail(f"{bpath}.within_days", f"must be an integer from 1 to {MAX_WITHIN_DAYS}")
            conds.append(f'ev."timestamp" >= now() - make_interval(days => {self.param(days)})')
        where = body.get("where", {})
        if not isinstance(where, Mapping) or len(where) > MAX_PERFORMED_FILTERS:
            return self.fail(f"{bpath}.where", f"must be a mapping of at most {MAX_PERFORMED_FILTERS} properties")
        for key, test in where.items():
            cond = self._property(str(key), test, f"{bpath}.where.{key}")
            if cond is None:
                return "FALSE"
            conds.append(cond)
        found = f"FROM events ev WHERE {' AND '.join(conds)}"
        if "count" not in body:
            return f"EXISTS (SELECT 1 {found})"
        count, cpath = body["count"], f"{bpath}.count"
        if not isinstance(count, Mapping):
            return self.fail(cpath, "must be a mapping like {op: gte, value: 3}")
        self._only(count, {"op", "value"}, cpath)
        op, value = count.get("op", "gte"), count.get("value")
        if op not in _COMPARE:
            return self.fail(f"{cpath}.op", f"unknown operator '{op}'; one of {', '.join(_COMPARE)}")
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return self.fail(f"{cpath}.value", "must be a whole number, 0 or more")
        return f"((SELECT count(*) {found}) {_COMPARE[op]} {self.param(value)})"

    def _property(self, key: str, test: Any, path: str) -> str | None:
        """One property filter of `performed`: a value (equal, as JSON) or {op, value}."""
        if not _PROPERTY_NAME.match(key):
            self.fail(path, "property names are letters, digits, spaces and _ . $ - (at most 100)")
            return None
        if not isinstance(test, Mapping):
            if isinstance(test, list | dict) or test is None:
                self.fail(path, "must be a string, number or boolean, or {op, value}")
                return None
            return f"ev.properties @> {self.param({key: test})}"
        self._only(test, {"op", "value"}, path)
        op, value = test.get("op", "eq"), test.get("value")
        field = f"ev.properties -> {self.param(key)}"
        if op == "exists":
            return f"({field} IS NOT NULL)" if value is not False else f"({field} IS NULL)"
        if op in ("in", "not_in"):
            if (
                not isinstance(value, list)
                or not value
                or len(value) > 100
                or any(isinstance(v, list | dict) or v is None for v in value)
            ):
                self.fail(f"{path}.value", f"'{op}' needs a list of 1 to 100 strings, numbers or booleans")
                return None
            test_sql = f"({field} = ANY(ARRAY(SELECT jsonb_array_elements({self.param(list(value))}))))"
            return test_sql if op == "in" else f"(NOT coalesce({test_sql}, FALSE))"
        if op in ("eq", "ne"):
            if isinstance(value, list | dict) or value is None:
                self.fail(f"{path}.value", "must be a string, number or boolean")
                return None
            has = f"(ev.properties @> {self.param({key: value})})"
            return has if op == "eq" else f"(NOT {has})"
        if op in ("gt", "gte", "lt", "lte"):
            if isinstance(value, bool) or not isinstance(value, int | float):
                self.fail(f"{path}.value", f"'{op}' needs a number")
                return None
            # Only numbers compare: a property holding text never matches (and never fails the query).
            number = f"CASE WHEN jsonb_typeof({field}) = 'number' THEN ({field})::numeric END"
            return f"({number} {_COMPARE[op]} {self.param(Decimal(str(value)))})"
        self.fail(f"{path}.op", f"unknown operator '{op}'; one of eq, ne, in, not_in, gt, gte, lt, lte, exists")
        return None


def _all_numbers(values: list[Any]) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def compile_segment(
    spec: Any,
    named: Mapping[str, Any] | None = None,
    *,
    path: str = "segment",
    first_param: int = 1,
) -> CompiledSegment:
    """Compile `spec` to a WHERE fragment; raises SegmentError listing every problem found."""
    compiler = _Compiler(named or {}, first_param)
    try:
        where = compiler.node(spec if spec is not None else {}, path)
        if len(where) > MAX_SEGMENT_SQL:
            raise _TooLarge(f"compiles to more than {MAX_SEGMENT_SQL // 1024} KB of SQL")
    except _TooLarge as exc:
        # Name the named segment that blew up too, when the path does not already.
        via = f" (through segments.{exc.through})" if exc.through and not path.startswith("segments.") else ""
        raise SegmentError([f"{path}: {exc}{via}"]) from None
    if compiler.errors:
        raise SegmentError(compiler.errors)
    return CompiledSegment(where=where, params=compiler.params)
