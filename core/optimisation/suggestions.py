"""Advisory suggestions for a campaign's email subject lines or SMS bodies, ranked, each with its
reason, never applied: a marketer copies one into the campaign if they like it.

Two engines:

- `results` (the default) learns from the tenant's own completed runs: each variant of each run
  is one observation (its text on the channel, recipients sent, human openers for email subjects
  or human clickers for SMS bodies, from core/results/report.py). Each text feature (personalised with
  the customer's name, short, a question, a number, an exclamation mark, urgency wording) is
  scored by the pooled rate of the variants that had it against those that did not, with the
  two-proportion z-test; past variants that won their run are kept as candidates. The
  campaign's current texts are rewritten toward the features that won (add the name, cut to a
  short form, urgency, drop or add the exclamation mark), and every candidate is ranked by a
  predicted rate: the tenant's rate moved by each feature's effect, and for a past text its own
  rate shrunk toward that prediction.
- `provider`: a language model behind the chat-completions HTTP API named in the tenant config
  (`suggestions.provider`), given the brand, the current texts, the variables a template may
  use and what the tenant's results say; it answers JSON suggestions with reasons.

Every suggestion is checked like any saved template (core/content/rendering.py check_text: compiled in
the sandbox, no unknown variable, rendered for the sample customer within the part's limits)
before it is returned; the ones that fail are listed in `dropped` with the reasons.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field

from core.campaigns.spec import CampaignSpec, Variant
from core.common import stats
from core.content.rendering import check_text
from core.content.templating import CUSTOMER_VARIABLES, EMAIL_SUBJECT, SMS_BODY, content_for_locale
from core.infra.db import TenantConn, tenant_tx
from core.results.report import results
from core.security.egress import EgressError, EgressGuard, EgressRefused
from core.tenants.config_schema import ChatProvider, TenantConfig

SuggestChannel = Literal["email", "sms"]
Engine = Literal["results", "provider"]
RUNS_LEARNT = 50  # the most recent completed runs the results engine reads
SHRINK = 100.0  # pseudo-recipients pulling a past text's own rate toward its predicted rate
SHORT_CHARS = {"email": 40, "sms": 100}
_EXPRESSION = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.S)
_URGENCY = re.compile(r"\b(today|tonight|now|last chance|ends|ending|hurry|final|only)\b", re.I)
_EMOJI = re.compile("[\U0001f300-\U0001faff\u2600-\u27bf]")


class ProviderFailure(Exception):
    """The configured provider could not be asked or gave no usable answer (the message says why)."""


def plain(text: str) -> str:
    """The text as a reader sees its length: each template expression counts as a short word."""
    return _EXPRESSION.sub("Alex", text)


@dataclass(frozen=True)
class Feature:
    """A property of a text whose effect on the rate is learnt."""

    name: str
    description: str
    test: Callable[[str, SuggestChannel], bool]


FEATURES = (
    Feature("personalised", "use the customer's first name", lambda t, _: bool(re.search(r"\bfirst_name\b", t))),
    Feature("short", "are short", lambda t, ch: len(plain(t)) <= SHORT_CHARS[ch]),
    Feature("question", "ask a question", lambda t, _: "?" in plain(t)),
    Feature("number", "name a number or a percentage", lambda t, _: bool(re.search(r"\d", plain(t)))),
    Feature("exclamation", "use an exclamation mark", lambda t, _: "!" in plain(t)),
    Feature("urgency", "say the offer ends soon", lambda t, _: bool(_URGENCY.search(plain(t)))),
    Feature("emoji", "use an emoji", lambda t, _: bool(_EMOJI.search(t))),
)


class Observation(BaseModel):
    """One variant of one past run: its text on the channel and how it did."""

    text: str
    run_id: str
    campaign: str
    variant: str
    sent: int
    successes: int
    won: bool = Field(description="the best rate of its run's variants (when the run had several)")

    @property
    def rate(self) -> float:
        """successes / sent."""
        return self.successes / self.sent if self.sent else 0.0


class FeatureEffect(BaseModel):
    """What one text feature did across the tenant's past variants."""

    feature: str
    description: str
    variants_with: int
    variants_without: int
    rate_with: float
    rate_without: float
    effect: float = Field(description="rate_with - rate_without")
    p_value: float


class Suggestion(BaseModel):
    """One suggested text, ranked, with why."""

    rank: int
    text: str
    reason: str
    source: Engine
    predicted_rate: float | None = Field(description="the results engine's estimate of the metric's rate")


class Dropped(BaseModel):
    """A suggestion that did not pass the template checks, and why."""

    text: str
    errors: list[str]


class LearntFrom(BaseModel):
    """The past results the suggestions rest on."""

    runs: int
    variants: int
    sent: int
    rate: float | None = Field(description="the tenant's pooled rate of the metric")


class SuggestionsRecord(BaseModel):
    """Ranked suggestions for a campaign on one channel; advisory, nothing is changed."""

    campaign_id: str
    channel: SuggestChannel
    engine: Engine
    metric: Literal["open", "click"] = Field(description="open rate for email subjects, click rate for SMS bodies")
    current: list[str] = Field(description="the campaign's texts on the channel now, per variant")
    learnt_from: LearntFrom
    effects: list[FeatureEffect]
    suggestions: list[Suggestion]
    dropped: list[Dropped]
    note: str | None = None


def current_text(spec_variant: Variant, config: TenantConfig, channel: SuggestChannel) -> str | None:
    """A variant's subject (email) or body (SMS) in the tenant's default locale, if it has one."""
    if channel == "email" and spec_variant.subject:
        return spec_variant.subject
    tset = config.templates.get(spec_variant.template)
    if tset is None:
        return None
    locale = config.brand.default_locale
    if channel == "email":
        email = content_for_locale(tset, "email", locale)
        return email.subject if email else None
    sms = content_for_locale(tset, "sms", locale)
    return sms.body if sms else None


_PAST_RUNS_SQL = """
SELECT r.id, r.campaign_id, r.config_version, c.name, c.definition
FROM runs r JOIN campaigns c ON c.tenant_id = r.tenant_id AND c.id = r.campaign_id
WHERE r.tenant_id = $1 AND r.status = 'completed' AND c.definition -> 'channels' ? $2
ORDER BY r.finished_at DESC NULLS LAST LIMIT $3
"""


async def observations(
    conn: TenantConn,
    tenant: str,
    channel: SuggestChannel,
    config_at: Callable[[int | None], Awaitable[TenantConfig | None]],
) -> list[Observation]:
    """Each variant of the tenant's last RUNS_LEARNT completed runs on `channel` with its text and
    results (human opens for email, human clicks for SMS; sent recipients as trials)."""
    out: list[Observation] = []
    for run in await conn.fetch(_PAST_RUNS_SQL, tenant, channel, RUNS_LEARNT):
        spec = CampaignSpec.model_validate(run["definition"])
        config = await config_at(run["config_version"])
        if config is None:
            continue
        record = await results(
            conn, tenant, scope="run", campaign_id=str(run["campaign_id"]), run_ids=[run["id"]],
            variant_order=[v.key for v in spec.variants],
        )  # fmt: skip
        variants = {v.key: v for v in spec.variants}
        seen: list[Observation] = []
        for group in record.groups:
            variant = variants.get(group.variant or "")
            text = current_text(variant, config, channel) if variant else None
            if group.kind != "variant" or text is None or group.sent == 0:
                continue
            hits = group.opens_unique if channel == "email" else group.clicks_unique
            seen.append(
                Observation(
                    text=text,
                    run_id=str(run["id"]),
                    campaign=run["name"],
                    variant=group.variant or "",
                    sent=group.sent,
                    successes=min(hits, group.sent),
                    won=False,
                )
            )
        if len(seen) > 1:
            best = max(seen, key=lambda o: o.rate)
            seen = [o.model_copy(update={"won": o is best}) for o in seen]
        out += seen
    return out


def effects(obs: list[Observation], channel: SuggestChannel) -> list[FeatureEffect]:
    """Each feature's pooled rate with and without it, where both sides have variants."""
    found = []
    for feature in FEATURES:
        with_ = [o for o in obs if feature.test(o.text, channel)]
        without = [o for o in obs if not feature.test(o.text, channel)]
        x1, n1 = sum(o.successes for o in with_), sum(o.sent for o in with_)
        x2, n2 = sum(o.successes for o in without), sum(o.sent for o in without)
        if not n1 or not n2:
            continue
        found.append(
            FeatureEffect(
                feature=feature.name,
                description=feature.description,
                variants_with=len(with_),
                variants_without=len(without),
                rate_with=x1 / n1,
                rate_without=x2 / n2,
                effect=x1 / n1 - x2 / n2,
                p_value=stats.two_proportion_z(x1, n1, x2, n2).p_value,
            )
        )
    return sorted(found, key=lambda e: -abs(e.effect))


def predicted_rate(text: str, channel: SuggestChannel, overall: float, found: list[FeatureEffect]) -> float:
    """The tenant's rate moved by each learnt feature: toward its with-rate if the text has it,
    its without-rate if not."""
    rate = overall
    tests = {f.name: f.test for f in FEATURES}
    for e in found:
        rate += (e.rate_with if tests[e.feature](text, channel) else e.rate_without) - overall
    return min(1.0, max(0.0, rate))


def _lower_first(text: str) -> str:
    return text[0].lower() + text[1:] if len(text) > 1 and text[0].isupper() and text[1].islower() else text


def _shorten(text: str, limit: int) -> str | None:
    for sep in (" - ", " \u2013 ", ": ", " | ", ", ", ". "):
        head = text.split(sep)[0].strip()
        if head != text and len(plain(head)) <= limit and len(head) >= 8:
            return head
    return None


def _rewrite(text: str, effect: FeatureEffect, channel: SuggestChannel) -> str | None:
    """`text` moved toward what `effect` says won, or None when there is no sensible rewrite."""
    has = {f.name: f.test for f in FEATURES}[effect.feature](text, channel)
    gain = effect.effect > 0
    if effect.feature == "personalised" and gain and not has:
        return "{{ first_name }}, " + _lower_first(text)
    if effect.feature == "short" and gain and not has:
        return _shorten(text, SHORT_CHARS[channel])
    if effect.feature == "urgency" and gain and not has:
        return "Last chance: " + _lower_first(text)
    if effect.feature == "exclamation" and gain and not has:
        return text.rstrip(" .") + "!"
    if effect.feature == "exclamation" and not gain and has:
        return text.replace("!", "").rstrip() or None
    return None


def _pct(rate: float) -> str:
    return f"{rate:.1%}"


def results_suggestions(
    current: list[str], obs: list[Observation], channel: SuggestChannel, limit: int
) -> tuple[list[tuple[str, str, float]], LearntFrom, list[FeatureEffect]]:
    """The default engine: (text, reason, predicted rate) ranked best first, what it learnt from,
    and the feature effects."""
    sent = sum(o.sent for o in obs)
    overall = sum(o.successes for o in obs) / sent if sent else 0.0
    learnt = LearntFrom(runs=len({o.run_id for o in obs}), variants=len(obs), sent=sent, rate=overall if sent else None)
    found = effects(obs, channel)
    metric = "opened" if channel == "email" else "clicked"
    candidates: dict[str, tuple[str, float]] = {}
    for text in current:
        for e in found:
            rewritten = _rewrite(text, e, channel)
            if rewritten is None or rewritten in current:
                continue
            reason = (
                f"rewrites '{text}': past variants that {e.description} were {metric} by "
                f"{_pct(e.rate_with)} against {_pct(e.rate_without)} for the others "
                f"({e.variants_with} variants with, {e.variants_without} without; p = {e.p_value:.2g})"
            )
            candidates.setdefault(rewritten, (reason, predicted_rate(rewritten, channel, overall, found)))
    for o in sorted(obs, key=lambda o: -o.rate):
        if o.text in current or o.text in candidates:
            continue
        prior = predicted_rate(o.text, channel, overall, found)
        shrunk = (o.successes + SHRINK * prior) / (o.sent + SHRINK)
        won = ", the best of its run's variants" if o.won else ""
        reason = (
            f"{metric} by {_pct(o.rate)} of {o.sent:,} recipients as variant {o.variant} of "
            f"'{o.campaign}' (run {o.run_id[:8]}{won}), against {_pct(overall)} across the tenant's past variants"
        )
        candidates[o.text] = (reason, shrunk)
    ranked = sorted(candidates.items(), key=lambda kv: -kv[1][1])
    return [(text, reason, rate) for text, (reason, rate) in ranked[: limit * 2]], learnt, found


def _chat_url(provider: ChatProvider) -> str:
    base = provider.endpoint.rstrip("/")
    return base if base.endswith("/chat/completions") else base + "/chat/completions"


def _prompt(
    config: TenantConfig, channel: SuggestChannel, current: list[str], found: list[FeatureEffect], limit: int
) -> list[dict[str, str]]:
    what = "email subject lines" if channel == "email" else "SMS message bodies (no opt-out footer: it is added)"
    system = (
        f"You write marketing {what} for {config.brand.name}. Texts are Jinja2 templates: the only "
        f"variables are {', '.join(CUSTOMER_VARIABLES[:-1])} and brand.name, written like {{{{ first_name }}}}. "
        'Answer only JSON: {"suggestions": [{"text": "...", "reason": "..."}]}, best first.'
    )
    user = {
        "task": f"suggest up to {limit} alternatives to the current texts",
        "channel": channel,
        "current": current,
        "what_worked_before": [
            f"{e.description}: {_pct(e.rate_with)} with, {_pct(e.rate_without)} without (p = {e.p_value:.2g})"
            for e in found
        ],
    }
    return [{"role": "system", "content": system}, {"role": "user", "content": json.dumps(user)}]


def _answer_items(content: str) -> list[dict[str, Any]]:
    """The suggestions in a model's answer: JSON, possibly inside a code fence."""
    fenced = re.search(r"```(?:json)?\s*(.*?)```", content, re.S)
    try:
        data = json.loads(fenced.group(1) if fenced else content)
    except ValueError as exc:
        raise ProviderFailure("the answer is not JSON") from exc
    items = data.get("suggestions") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise ProviderFailure('the answer has no "suggestions" list')
    return [i if isinstance(i, dict) else {"text": str(i)} for i in items]


# The platform's cap on one provider call, whatever the tenant's timeout_seconds says: a call
# holds an API worker's attention (not a database connection) for at most this long.
PROVIDER_MAX_SECONDS = 30.0
# The most a provider's answer may be.
PROVIDER_MAX_BYTES = 256 * 1024


class ProviderRefused(ProviderFailure):
    """The guard will not call the tenant's provider endpoint (a 422 naming the field)."""


async def provider_suggestions(
    guard: EgressGuard,
    config: TenantConfig,
    channel: SuggestChannel,
    current: list[str],
    found: list[FeatureEffect],
    limit: int,
    key: str,
) -> list[tuple[str, str]]:
    """Ask the tenant's chat-completions provider with `key` (the tenant's own secret, resolved
    by the caller); (text, reason) in the provider's order."""
    provider = config.suggestions.provider
    assert provider is not None
    body = {"model": provider.model, "messages": _prompt(config, channel, current, found, limit), "temperature": 0.7}
    # Through the guard: the endpoint is the tenant's. What goes wrong is told in its fixed words,
    # never with the remote body (which could be anything the endpoint was aimed at).
    try:
        response = await guard.post(
            _chat_url(provider),
            json=body,
            headers={"Authorization": f"Bearer {key}"},
            deadline_seconds=min(provider.timeout_seconds, PROVIDER_MAX_SECONDS),
            max_bytes=PROVIDER_MAX_BYTES,
        )
    except EgressRefused:
        raise ProviderRefused("refused") from None
    except EgressError as exc:
        raise ProviderFailure(exc.word) from None
    if response.status_code != 200:
        raise ProviderFailure(f"rejected with status {response.status_code}")
    try:
        content = response.json()["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise ProviderFailure("the answer is not a chat completion (choices[0].message.content)") from exc
    out = []
    for item in _answer_items(str(content)):
        text = str(item.get("text") or "").strip()
        if text:
            out.append((text, str(item.get("reason") or "suggested by the model")))
    return out


def validated(
    proposals: list[tuple[str, str, float | None]],
    config: TenantConfig,
    channel: SuggestChannel,
    source: Engine,
    limit: int,
) -> tuple[list[Suggestion], list[Dropped]]:
    """Each proposal checked as a saved template would be; the first `limit` that pass, ranked."""
    part = EMAIL_SUBJECT if channel == "email" else SMS_BODY
    kept: list[Suggestion] = []
    dropped: list[Dropped] = []
    seen: set[str] = set()
    for text, reason, rate in proposals:
        if text in seen or len(kept) >= limit:
            continue
        seen.add(text)
        errors = check_text(text, "text", part, config)
        if errors:
            dropped.append(Dropped(text=text, errors=errors))
            continue
        kept.append(Suggestion(rank=len(kept) + 1, text=text, reason=reason, source=source, predicted_rate=rate))
    return kept, dropped


async def suggest(
    pool: Any,
    tenant: str,
    campaign_id: str,
    spec: CampaignSpec,
    config: TenantConfig,
    channel: SuggestChannel,
    *,
    engine: Engine,
    limit: int,
    config_at: Callable[[int | None], Awaitable[TenantConfig | None]],
    guard: EgressGuard | None = None,
    api_key: str | None = None,
    variant: str | None = None,
) -> SuggestionsRecord:
    """Ranked, validated suggestions for the campaign's texts on `channel` (one variant's, or all).

    The tenant's results are read in a transaction of their own on `pool`, closed before the
    provider is asked: no tenant holds a database connection while it waits on its provider."""
    variants = [v for v in spec.variants if variant is None or v.key == variant]
    current = list(dict.fromkeys(t for v in variants if (t := current_text(v, config, channel)) is not None))
    async with tenant_tx(pool, tenant) as conn:
        obs = await observations(conn, tenant, channel, config_at)
    ranked, learnt, found = results_suggestions(current, obs, channel, limit)
    note = None
    proposals: list[tuple[str, str, float | None]]
    if engine == "provider":
        assert guard is not None and api_key is not None
        answer = await provider_suggestions(guard, config, channel, current, found, limit, api_key)
        proposals = [(t, r, predicted_rate(t, channel, learnt.rate, found) if learnt.rate else None) for t, r in answer]
    else:
        proposals = [(t, r, p) for t, r, p in ranked]
        if not obs:
            note = f"no completed run on {channel} to learn from yet: run the campaign (or another) first"
    kept, dropped = validated(proposals, config, channel, engine, limit)
    return SuggestionsRecord(
        campaign_id=campaign_id,
        channel=channel,
        engine=engine,
        metric="open" if channel == "email" else "click",
        current=current,
        learnt_from=learnt,
        effects=found,
        suggestions=kept,
        dropped=dropped,
        note=note,
    )
