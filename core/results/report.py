"""Results of runs and campaigns: what each variant and the holdout did, in one SQL statement over
a per-recipient rollup of the ledger and the event tables that triggers keep current (migration
045), with lift against the holdout and the leading variant by a significance test; and an
hourly series per variant for charts, from the ledger and the event tables themselves.

The unit is a recipient of a run, (run, customer): a customer in two runs of a campaign counts
twice, so campaign figures are the sums of their runs'. Recipients are everyone the ledger
assigned to the group, sent or not (intent to treat): holdout customers are recorded before any
consent or policy check, so a variant's skipped customers must stay in its denominator for the
comparison with the holdout to be fair."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, Literal, Required, TypedDict, Unpack

from pydantic import BaseModel, Field

from core.common import stats
from core.experiments.buckets import GLOBAL_CONTROL, HOLDOUT
from core.experiments.models import VariantStat
from core.experiments.spec import ExperimentMetric
from core.infra.db import TenantConn

DEFAULT_CONVERSION_EVENT = "purchase"
SIGNIFICANCE = 0.05

# One statement over the per-recipient rollup (recipient_results, kept by triggers on the
# ledger and the event tables, migration 045): one row per recipient (run, customer) of the
# runs asked, counted per variant in one scan. A row with no ledger messages is a customer the
# events name but the ledger does not hold: not a recipient.
_RESULTS_SQL = """
SELECT variant,
       count(*) AS recipients,
       count(*) FILTER (WHERE sent > 0) AS sent,
       sum(sent) AS messages_sent,
       sum(failed) AS messages_failed,
       sum(skipped) AS messages_skipped,
       count(*) FILTER (WHERE delivered) AS delivered,
       count(*) FILTER (WHERE bounced) AS bounced,
       count(*) FILTER (WHERE opened) AS opens_unique,
       sum(opens) AS opens_all,
       sum(machine_opens) AS opens_machine,
       count(*) FILTER (WHERE clicked) AS clicks_unique,
       sum(clicks) AS clicks_all,
       sum(machine_clicks) AS clicks_machine,
       count(*) FILTER (WHERE unsubscribed) AS unsubscribes,
       count(*) FILTER (WHERE complained) AS complaints,
       count(*) FILTER (WHERE event_counts ? $3) AS conversions,
       coalesce(sum((event_counts ->> $3)::bigint), 0) AS conversion_events,
       sum(revenue) AS revenue
FROM recipient_results
WHERE tenant_id = $1 AND run_id = ANY($2::uuid[]) AND sent + failed + skipped > 0
GROUP BY variant
"""
# JIT compiles the results query for longer than it saves. SET LOCAL: for the rest of this
# transaction only.
_RESULTS_SETTINGS = "SET LOCAL jit = off"

# The series' streams arrive in (run, customer) order, so a merge join is always right; the
# planner's row estimates for the per-recipient groups are not: with statistics older than the
# run's rows it expects one row and picks nested loops that rescan a group per recipient
# (quadratic), with fresh ones it picks hash joins that spill a million-row table to disk. JIT
# compiles for longer than it saves here.
_PLANNER_SETTINGS = "SET LOCAL enable_nestloop = off; SET LOCAL enable_hashjoin = off; SET LOCAL jit = off"

# Sends from the ledger, human opens and clicks (their recipient's variant from the ledger) and
# attributed conversions, each counted per variant and UTC hour. Events are grouped per
# recipient and hour first, in (run, customer) index order, to meet the ledger in a merge join.
# Not joined with the rollup for the variant instead: the planner misjudges that join (a
# filtered rollup scan looks small) and its plan took 21 s where this one takes 6 s at 1M.
_SERIES_SQL = """
WITH ledger AS (
    SELECT run_id, customer_id, min(variant) AS variant FROM deliveries
    WHERE tenant_id = $1 AND run_id = ANY($2::uuid[])
    GROUP BY run_id, customer_id
), hourly AS (
    SELECT run_id, customer_id, date_trunc('hour', occurred_at, 'UTC') AS hour,
           count(*) FILTER (WHERE kind = 'open') AS opens, count(*) FILTER (WHERE kind = 'click') AS clicks
    FROM message_events
    WHERE tenant_id = $1 AND run_id = ANY($2::uuid[]) AND kind IN ('open', 'click') AND NOT machine
    GROUP BY run_id, customer_id, hour
)
SELECT variant, hour, sum(sends)::bigint AS sends, sum(opens)::bigint AS opens, sum(clicks)::bigint AS clicks,
       sum(conversions)::bigint AS conversions
FROM (
    SELECT variant, date_trunc('hour', created_at, 'UTC') AS hour, count(*) AS sends,
           0 AS opens, 0 AS clicks, 0 AS conversions
    FROM deliveries
    WHERE tenant_id = $1 AND run_id = ANY($2::uuid[]) AND status = 'sent'
    GROUP BY 1, 2
    UNION ALL
    SELECT l.variant, h.hour, 0, sum(h.opens), sum(h.clicks), 0
    FROM hourly h JOIN ledger l ON l.run_id = h.run_id AND l.customer_id = h.customer_id
    GROUP BY 1, 2
    UNION ALL
    SELECT variant, date_trunc('hour', occurred_at, 'UTC'), 0, 0, 0, count(*)
    FROM customer_events
    WHERE tenant_id = $1 AND run_id = ANY($2::uuid[]) AND type = $3
    GROUP BY 1, 2
) parts
GROUP BY variant, hour
ORDER BY variant NULLS LAST, hour
"""

GroupKind = Literal["variant", "holdout", "global_control", "unassigned"]
Metric = Literal["conversion", "click", "open"]


class GroupRates(BaseModel):
    """Each count of a group over its recipients; null for a group without recipients."""

    sent: float | None
    delivered: float | None
    bounced: float | None
    opens_unique: float | None
    clicks_unique: float | None
    unsubscribes: float | None
    complaints: float | None
    conversions: float | None = Field(description="the conversion rate: converted recipients / recipients")
    revenue_per_recipient: float | None
    open_rate: float | None = Field(description="unique human openers / recipients sent at least one message")
    click_rate: float | None = Field(description="unique human clickers / recipients sent at least one message")
    click_to_open: float | None = Field(description="unique human clickers / unique human openers")


def _unique(event: str) -> Any:
    """A count of recipients with at least one human `event` (an open, a click)."""
    return Field(description=f"recipients with at least one human {event}")


def _all(event: str) -> Any:
    """A count of `event` events, machine ones included."""
    return Field(description=f"{event} events, machine ones included")


def _machine(event: str) -> Any:
    """A count of `event` events flagged machine."""
    return Field(description=f"{event} events flagged machine")


class GroupResult(BaseModel):
    """What one variant (or the holdout, or the tenant's global control) did. Counts without
    `_all`/`messages_` are recipients (a recipient is a customer of a run), each counted once."""

    variant: str | None = Field(description="the variant key; 'holdout' or 'global_control' for the controls")
    kind: GroupKind
    recipients: int = Field(description="customers the ledger assigned to this group, sent or not")
    sent: int = Field(description="recipients sent at least one message")
    messages_sent: int
    messages_failed: int
    messages_skipped: int
    delivered: int = Field(description="recipients with a delivery receipt")
    bounced: int = Field(description="recipients with a bounce (hard or soft)")
    opens_unique: int = _unique("open")
    opens_all: int = _all("open")
    opens_machine: int = _machine("open")
    clicks_unique: int = _unique("click")
    clicks_all: int = _all("click")
    clicks_machine: int = _machine("click")
    unsubscribes: int = Field(description="recipients who unsubscribed through the message")
    complaints: int = Field(description="recipients who complained")
    conversions: int = Field(description="recipients with at least one attributed conversion event")
    conversion_events: int = Field(description="attributed conversion events")
    revenue: Decimal = Field(description="sum of the amounts of attributed purchase events")
    rates: GroupRates


class Lift(BaseModel):
    """A variant against a baseline group on one metric: the difference of the two rates with
    Newcombe's 95% interval, the relative lift, and the two-proportion z-test's p-value."""

    variant: str
    baseline: str
    rate: float | None
    baseline_rate: float | None
    difference: float | None = Field(description="rate - baseline_rate, in proportion points")
    ci95: tuple[float, float] | None = Field(description="Newcombe hybrid score interval of the difference")
    relative: float | None = Field(description="rate / baseline_rate - 1; null when the baseline rate is 0")
    z: float | None
    p_value: float | None
    significant: bool


class Leader(BaseModel):
    """The leading variant on one metric and whether the test tells the groups apart."""

    variant: str | None
    groups: list[str] = Field(description="the groups the test compares")
    test: Literal["two-proportion z-test", "chi-square test of homogeneity"] | None
    statistic: float | None
    df: int | None
    p_value: float | None
    significant: bool
    verdict: str = Field(description="e.g. 'B leads (p = 0.0012)' or 'not yet significant'")
    warning: str | None = None


class Comparison(BaseModel):
    """One metric compared: conversions against the control group, opens and clicks between
    the variants (the holdout got no message to open)."""

    metric: Metric
    denominator: Literal["recipients", "sent"]
    baseline: str | None = Field(description="what each variant is compared with")
    lifts: list[Lift]
    leader: Leader


class Query(TypedDict, total=False):
    """What `results` and `series` read: one run, or every run of a campaign (`run_ids`), with
    its variants listed in `variant_order` (the campaign's), then by key."""

    scope: Required[Literal["run", "campaign"]]
    campaign_id: Required[str]
    run_ids: Required[Sequence[str | uuid.UUID]]
    variant_order: Sequence[str]
    conversion_event: str


class ScopeRecord(BaseModel):
    """What a results or series answer covers: a run or a campaign, its runs, the conversion event."""

    scope: Literal["run", "campaign"]
    campaign_id: str
    run_ids: list[str]
    conversion_event: str

    @classmethod
    def of(cls, query: Query) -> ScopeRecord:
        """The scope of `query`, its run ids as canonical UUID strings."""
        return ScopeRecord(
            scope=query["scope"],
            campaign_id=query["campaign_id"],
            run_ids=[str(uuid.UUID(str(r))) for r in query["run_ids"]],
            conversion_event=query.get("conversion_event", DEFAULT_CONVERSION_EVENT),
        )

    def run_uuids(self) -> list[uuid.UUID]:
        """The run ids as the SQL's uuid[] parameter."""
        return [uuid.UUID(r) for r in self.run_ids]


class ResultsRecord(ScopeRecord):
    """Results of a run or of every run of a campaign, per group, with comparisons."""

    control: str | None = Field(description="the group conversions are compared with: holdout, else global_control")
    groups: list[GroupResult]
    comparisons: list[Comparison]


class SeriesPoint(BaseModel):
    """One UTC hour of one group: messages sent, human open and click events, conversion events."""

    hour: dt.datetime
    sends: int
    opens: int
    clicks: int
    conversions: int


class GroupSeries(BaseModel):
    """The hourly series of one group."""

    variant: str | None
    kind: GroupKind
    points: list[SeriesPoint]


class SeriesRecord(ScopeRecord):
    """Hourly series per group of a run or of every run of a campaign."""

    groups: list[GroupSeries]


def _kind(variant: str | None) -> GroupKind:
    if variant is None:
        return "unassigned"
    if variant == HOLDOUT:
        return "holdout"
    if variant == GLOBAL_CONTROL:
        return "global_control"
    return "variant"


def _ratio(num: float, den: float) -> float | None:
    return None if den == 0 else num / den


# The counts whose rate is over all the group's recipients (GroupRates' field of the same name).
_PER_RECIPIENT = (
    "sent",
    "delivered",
    "bounced",
    "opens_unique",
    "clicks_unique",
    "unsubscribes",
    "complaints",
    "conversions",
)


def _group(row: Any) -> GroupResult:
    r = dict(row)
    n, sent = r["recipients"], r["sent"]
    counts = {k: int(v) for k, v in r.items() if k not in ("variant", "revenue")}
    revenue = Decimal(r["revenue"])
    rates = GroupRates(
        **{k: _ratio(counts[k], n) for k in _PER_RECIPIENT},
        revenue_per_recipient=_ratio(float(revenue), n),
        open_rate=_ratio(counts["opens_unique"], sent),
        click_rate=_ratio(counts["clicks_unique"], sent),
        click_to_open=_ratio(counts["clicks_unique"], counts["opens_unique"]),
    )
    return GroupResult(variant=r["variant"], kind=_kind(r["variant"]), revenue=revenue, rates=rates, **counts)


def _successes(group: GroupResult, metric: Metric) -> tuple[int, int]:
    """(successes, trials) of `metric` in `group`. Successes never exceed trials: an open or click
    can arrive for a recipient whose send was not recorded as sent (a forwarded message, a
    retried send the ledger recorded as failed), and a rate over 1 would break every test."""
    if metric == "conversion":
        x, n = group.conversions, group.recipients
    else:
        x, n = (group.clicks_unique if metric == "click" else group.opens_unique), group.sent
    return min(x, n), n


def variant_stats(groups: Sequence[GroupResult], order: Sequence[str], metric: ExperimentMetric) -> list[VariantStat]:
    """(successes, trials) of each variant in `order` on `metric` from a results record's groups;
    machine opens and clicks never count (the results count human ones only)."""
    by_key = {g.variant: g for g in groups if g.kind == "variant"}
    out = []
    for key in order:
        x, n = _successes(by_key[key], metric) if key in by_key else (0, 0)
        out.append(VariantStat(variant=key, successes=x, trials=n, rate=x / n if n else None))
    return out


def _lift(group: GroupResult, base: GroupResult, metric: Metric) -> Lift:
    x1, n1 = _successes(group, metric)
    x2, n2 = _successes(base, metric)
    key, base_key = group.variant or "", base.variant or ""
    if n1 == 0 or n2 == 0:
        return Lift(
            variant=key, baseline=base_key, rate=_ratio(x1, n1), baseline_rate=_ratio(x2, n2), difference=None,
            ci95=None, relative=None, z=None, p_value=None, significant=False,
        )  # fmt: skip
    p1, p2 = x1 / n1, x2 / n2
    test = stats.two_proportion_z(x1, n1, x2, n2)
    return Lift(
        variant=key,
        baseline=base_key,
        rate=p1,
        baseline_rate=p2,
        difference=p1 - p2,
        ci95=stats.newcombe_diff(x1, n1, x2, n2),
        relative=p1 / p2 - 1 if p2 > 0 else None,
        z=test.statistic,
        p_value=test.p_value,
        significant=test.p_value < SIGNIFICANCE,
    )


def _leader(contenders: list[GroupResult], metric: Metric) -> Leader:
    """The best of `contenders` on `metric`, tested against the rest: a z-test for two groups,
    chi-square for more."""
    tested = [g for g in contenders if _successes(g, metric)[1] > 0]
    names = [g.variant or "" for g in tested]
    if len(tested) < 2:
        return Leader(
            variant=names[0] if tested else None, groups=names, test=None, statistic=None, df=None, p_value=None,
            significant=False, verdict="not yet significant (fewer than two groups to compare)",
        )  # fmt: skip
    best = max(tested, key=lambda g: _successes(g, metric)[0] / _successes(g, metric)[1])
    # The leader first, so a two-group z is positive when it leads.
    cells = [_successes(g, metric) for g in sorted(tested, key=lambda g: g is not best)]
    if len(tested) == 2:
        result = stats.two_proportion_z(cells[0][0], cells[0][1], cells[1][0], cells[1][1])
        test: Literal["two-proportion z-test", "chi-square test of homogeneity"] = "two-proportion z-test"
    else:
        result = stats.chi_square_homogeneity(cells)
        test = "chi-square test of homogeneity"
    significant = result.p_value < SIGNIFICANCE
    key = best.variant or ""
    return Leader(
        variant=key,
        groups=names,
        test=test,
        statistic=result.statistic,
        df=result.df,
        p_value=result.p_value,
        significant=significant,
        verdict=f"{key} leads (p = {result.p_value:.2g})" if significant else "not yet significant",
        warning=(
            f"an expected cell count is {result.min_expected:.1f} (< 5): the test's approximation is rough"
            if result.min_expected < 5
            else None
        ),
    )


def _comparisons(groups: list[GroupResult]) -> tuple[str | None, list[Comparison]]:
    variants = [g for g in groups if g.kind == "variant"]  # in the campaign's order already
    by_key = {g.variant: g for g in groups}
    control = next((by_key[k] for k in (HOLDOUT, GLOBAL_CONTROL) if k in by_key), None)
    out = []
    conv_lifts = [_lift(v, control, "conversion") for v in variants] if control else []
    # One variant alone: whether it beats the control is the question the test answers.
    contenders = variants if len(variants) > 1 or control is None else [*variants, control]
    out.append(
        Comparison(
            metric="conversion",
            denominator="recipients",
            baseline=control.variant if control else None,
            lifts=conv_lifts,
            leader=_leader(contenders, "conversion"),
        )
    )
    for metric in ("click", "open"):
        # The holdout got nothing to open or click: variants are compared with the first one.
        base = variants[0] if variants else None
        out.append(
            Comparison(
                metric=metric,
                denominator="sent",
                baseline=base.variant if base else None,
                lifts=[_lift(v, base, metric) for v in variants[1:]] if base else [],
                leader=_leader(variants, metric),
            )
        )
    return (control.variant if control else None), out


def _group_order(variant: str | None, order: Sequence[str]) -> tuple[int, int, str]:
    kind = _kind(variant)
    rank = ["variant", "holdout", "global_control", "unassigned"].index(kind)
    return (rank, order.index(variant) if variant in order else len(order), variant or "")


async def results(conn: TenantConn, tenant: str, **query: Unpack[Query]) -> ResultsRecord:
    """The results of `run_ids` (one run, or every run of a campaign) in one query; variants are
    listed and compared in `variant_order` (the campaign's), then by key. Turns JIT off for
    the rest of the transaction (`_RESULTS_SETTINGS`)."""
    scope, variant_order = ScopeRecord.of(query), query.get("variant_order", ())
    await conn.execute(_RESULTS_SETTINGS)
    rows = await conn.fetch(_RESULTS_SQL, tenant, scope.run_uuids(), scope.conversion_event)
    groups = sorted((_group(r) for r in rows), key=lambda g: _group_order(g.variant, variant_order))
    control, comparisons = _comparisons(groups)
    return ResultsRecord(**scope.model_dump(), control=control, groups=groups, comparisons=comparisons)


async def series(conn: TenantConn, tenant: str, **query: Unpack[Query]) -> SeriesRecord:
    """Hourly sends, human opens and clicks, and conversion events per group, in one query; sets
    planner options for the rest of the transaction (`_PLANNER_SETTINGS`)."""
    scope, variant_order = ScopeRecord.of(query), query.get("variant_order", ())
    by_group: dict[str | None, list[SeriesPoint]] = {}
    await conn.execute(_PLANNER_SETTINGS)
    for r in await conn.fetch(_SERIES_SQL, tenant, scope.run_uuids(), scope.conversion_event):
        point = SeriesPoint(
            hour=r["hour"], sends=r["sends"], opens=r["opens"], clicks=r["clicks"], conversions=r["conversions"]
        )
        by_group.setdefault(r["variant"], []).append(point)
    keys = sorted(by_group, key=lambda v: _group_order(v, variant_order))
    groups = [GroupSeries(variant=k, kind=_kind(k), points=by_group[k]) for k in keys]
    return SeriesRecord(**scope.model_dump(), groups=groups)
