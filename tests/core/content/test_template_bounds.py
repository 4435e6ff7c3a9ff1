"""Every bound of the template sandbox, one by one: each operation that can build a large value
is refused before it runs, with a message naming the limit; the allowlist refuses what is not
on it and serves what a marketer needs; compile errors of any kind are located; named-segment
expansion stops at its bounds; and the check pool stops a check at its deadline and memory
limit, naming where it was, and goes on serving."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from core.content.check_pool import CheckPool
from core.content.rendering import check_part, sample_customer
from core.content.templating import (
    EMAIL_HTML,
    MAX_INT_BITS,
    MAX_STRING,
    SMS_BODY,
    RenderFailure,
    TemplateError,
    check_source,
    render_context,
    render_part,
    report_progress,
)
from core.customers.segments import (
    MAX_SEGMENT_NODES,
    MAX_SEGMENT_PARAMS,
    SegmentError,
    compile_segment,
)
from core.tenants.config_schema import Brand

BRAND = Brand(name="Fresh & Co", from_email="deals@fresh.example.com")


def ctx(**attributes: Any) -> dict[str, Any]:
    context = render_context(sample_customer(), BRAND, {"id": "c1", "name": "Spring"}, "A", "https://u.example/u/t")
    if attributes:
        context["attributes"] = attributes
    return context


def refused(source: str, **attributes: Any) -> str:
    with pytest.raises(RenderFailure) as err:
        render_part(source, ctx(**attributes), EMAIL_HTML)
    return err.value.reason


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        # ** by the result's size: exponent times bit length of the base
        (
            "{{ (((10**100)**100)**100)**10 }}",
            "exponent 100 is over the limit: the result would have about 33,300 bits",
        ),
        ("{{ 2 ** 5000 }}", f"(at most {MAX_INT_BITS:,})"),
        # integer size of products
        ("{{ (10**1000) * (10**1000) }}", f"over the limit of {MAX_INT_BITS:,}"),
        # repetition, concatenation with + and ~
        ("{{ 'ab' * 60000 }}", f"repetition would make 120,000 characters, over the limit of {MAX_STRING:,}"),
        ("{{ ['a' * 1000] * 200 }}", "repetition would make 200,800 characters"),
        ("{% set a = 'a' * 60000 %}{{ a + a }}", "concatenation would make 120,000 characters"),
        ("{% set a = 'a' * 60000 %}{{ a ~ a }}", "concatenation (~) would make 120,000 characters"),
        ("{% set a = 'a' * 60000 %}{{ a ~ 1 ~ a }}", "concatenation (~) would make 120,001 characters"),
        # padding methods and filters
        ("{{ 'a'.ljust(300000000) }}", "padding width 300,000,000 is over the limit of 100,000"),
        ("{{ 'a'.rjust(300000000) }}", "padding width 300,000,000 is over the limit"),
        ("{{ 'a'.center(300000000) }}", "padding width 300,000,000 is over the limit"),
        ("{{ 'a'.zfill(300000000) }}", "padding width 300,000,000 is over the limit"),
        ("{{ ('\t' * 1000).expandtabs(1000000) }}", "expandtabs would make 1,000,001,000 characters"),
        ("{{ 'x'|center(999999999) }}", "width 999999999 is over the limit"),
        ("{{ 'x'|indent(999999999) }}", "width 999999999 is over the limit"),
        ("{{ ('x\n' * 1000)|indent(900) }}", "indent would make"),
        ("{{ 'x'|wordwrap(999999999) }}", "width 999999999 is over the limit"),
        ("{{ ('a ' * 10000)|wordwrap(1, wrapstring='y' * 1000) }}", "wordwrap would make"),
        # widths and precisions in formats, with '*' and nested fields refused
        ("{{ '{:>99999999}'.format(1) }}", "format width '99999999' is over the limit of 1000"),
        ("{{ '{:.99999}f'.format(1.0) }}", "format width '99999' is over the limit"),
        ("{{ '{:{}}'.format(1, 99999999) }}", "may not contain a replacement field"),
        ("{{ '{0}' * 2000 }}", None),  # built, not formatted: bounded by repetition only
        ("{{ ('{0}' * 5000).format('x' * 1000) }}", "format would make"),
        ("{{ '{x:>99999999}'.format_map({'x': 1}) }}", "format width '99999999' is over the limit"),
        ("{{ '%99999999d' % 1 }}", "format width '99999999' is over the limit"),
        ("{{ '%.99999f' % 1.0 }}", "format width '99999' is over the limit"),
        ("{{ '%*d' % (99999999, 1) }}", "format width '*' is not allowed"),
        ("{{ '%.*f' % (99999, 1.0) }}", "format width '*' is not allowed"),
        ("{{ ('%s' * 200) % (('x' * 400,) * 200) }}", "format would make"),
        ("{{ '%99999999s'|format('x') }}", "format width '99999999' is over the limit"),
        # join, filter and method: separator times items + the items
        ("{{ range(1000)|join('x' * 50000) }}", "join would make 49,950,001 characters"),
        ("{{ ('x' * 50000).join(range(1000)|map('string')) }}", "join would make 49,950,001 characters"),
        ("{{ (['a' * 900] * 100)|join }}", None),
        # replace, filter and method: hits times the growth
        ("{{ ('a' * 1000).replace('a', 'b' * 1000) }}", "replace would make 1,000,000 characters"),
        ("{{ ('a' * 1000)|replace('a', 'b' * 1000) }}", "replace would make 1,000,000 characters"),
        ("{{ ('a' * 1000)|replace('', 'b' * 1000) }}", "replace would make"),
        # range, batch, slice, lipsum
        ("{{ range(10**9)|list }}", "range of 1,000,000,000 items is over the limit of 1,000"),
        ("{{ [1]|batch(100000000, 'x')|list }}", "batch size 100,000,000 is over the limit"),
        ("{{ [1]|slice(100000000)|list }}", "slice count 100,000,000 is over the limit"),
        ("{{ lipsum(100000) }}", "lipsum is limited to 10 paragraphs of 100 words"),
        ("{{ lipsum(1, max=100000000) }}", "lipsum is limited to"),
        # round's precision (round(5, -10**9) computes 10**(10**9)) and tojson's indent
        ("{{ 5|round(-1000000000) }}", "round precision -1,000,000,000 is over the limit of 100"),
        ("{{ [1]|tojson(100000000) }}", "tojson indent 100,000,000 is over the limit of 8"),
    ],
)
def test_each_bound_refuses_before_building_and_names_the_limit(source: str, reason: str | None) -> None:
    if reason is None:
        assert render_part(source, ctx(), EMAIL_HTML)
    else:
        assert reason in refused(source)


def test_captured_blocks_are_bounded_before_they_are_joined() -> None:
    """A loop yielding one long string a thousand times is cheap until it is joined (once, in C)."""
    for source in (
        "{% macro m(a) %}{% for i in range(1000) %}{{ a }}{% endfor %}{% endmacro %}{{ m('x' * 100000)|length }}",
        "{% set a = 'x' * 100000 %}{% set b %}{% for i in range(1000) %}{{ a }}{% endfor %}{% endset %}{{ b|length }}",
    ):
        with pytest.raises(RenderFailure) as err:
            render_part(source, ctx(), SMS_BODY)
        assert err.value.reason == "a block would make 100,000,000 characters, over the limit of 1,000,000"


def test_customer_data_meets_the_same_bounds_at_send_time() -> None:
    """`attributes.w` was "sample" for the save check; a customer's 300000000 is refused at send."""
    assert check_part("{{ 'a'.ljust(attributes.w|int) }}", "p", SMS_BODY, ctx()) == []
    assert "padding width 300,000,000 is over the limit" in refused("{{ 'a'.ljust(attributes.w|int) }}", w="300000000")
    assert "format width '*' is not allowed" in refused("{{ '%*d' % (attributes.w|int, 1) }}", w="300000000")
    assert "exponent" in refused("{{ 10 ** (attributes.w|int) }}", w="300000000")
    assert "repetition would make" in refused("{{ 'x' * (attributes.w|int) }}", w="300000000")


@pytest.mark.parametrize(
    ("source", "name"),
    [
        ("{{ first_name.encode() }}", "'encode' of a str value is not allowed"),
        ("{{ first_name.translate({}) }}", "'translate' of a str value is not allowed"),
        ("{{ ''.__class__ }}", "'__class__' of a str value is not allowed"),
        ("{{ attributes.copy() }}", "'copy' of a dict value is not allowed"),
        ("{{ attributes.fromkeys([1]) }}", "'fromkeys' of a dict value is not allowed"),
        ("{{ [1].__len__() }}", "'__len__' of a list value is not allowed"),
        ("{{ (1).bit_length() }}", "'bit_length' of a int value is not allowed"),
        ("{{ range.__call__ }}", "not allowed"),
        ("{{ loop.__class__ }}", None),  # no loop here: an undefined variable, refused all the same
    ],
)
def test_attribute_access_is_an_allowlist(source: str, name: str | None) -> None:
    reason = refused(source, a=1)
    if name is not None:
        assert name in reason


def test_what_a_marketer_needs_is_allowed() -> None:
    source = (
        "{{ first_name.upper() }} {{ first_name.lower() }} {{ 'hello world'.title() }} {{ 'x'.capitalize() }}"
        "|{{ '  a  '.strip() }}|{{ 'abc'.startswith('a') }} {{ 'abc'.endswith('c') }}"
        " {{ 'a,b'.split(',')|join('+') }} {{ attributes.get('tier', 'none') }}"
        " {% for k, v in attributes.items() %}{{ k }}={{ v }}{% endfor %} {{ attributes.keys()|list|length }}"
        " {{ attributes.values()|list|length }} {{ '{:>5}|{:.2f}'.format('x', 2.5) }} {{ '%-4s|%03d' % ('ab', 7) }}"
        " {{ 'a-b'.replace('-', '+') }} {{ 'x'.ljust(3, '.') }} {{ '7'.zfill(3) }}"
        " {% set ns = namespace(n=0) %}{% for i in range(3) %}{% set ns.n = ns.n + i %}{{ loop.index }}{% endfor %}"
        "{{ ns.n }} {{ ['b', 'a']|sort|join }} {{ 2 ** 10 }} {{ 'ab' ~ 1 }} {{ [1] + [2] }}"
        " {{ 'Hi {name}'.format_map({'name': first_name}) }} {{ lipsum(1, False, 3, 5)|wordcount > 0 }}"
        " {{ 'long text here'|truncate(9) }}"
    )
    text = render_part(source, ctx(tier="gold"), SMS_BODY)
    assert text == (
        "ALEX alex Hello World X|a|True True a+b gold tier=gold 1 1     x|2.50 ab  |007 a+b x.. 007 1233 ab"
        " 1024 ab1 [1, 2] Hi Alex True long text here"
    )


def test_markup_values_keep_their_methods_and_escaping() -> None:
    assert render_part("{{ ('<b>' ~ first_name ~ '</b>')|upper }}", ctx(), EMAIL_HTML) == "&lt;B&gt;ALEX&lt;/B&gt;"
    assert render_part("{{ ('<b>x</b>'|safe).striptags() }}", ctx(), EMAIL_HTML) == "x"


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("{{ first_name | nope }}", "syntax error at line 1: No filter named 'nope'."),
        ("{{ first_name is nope }}", "syntax error at line 1: No test named 'nope'."),
        ("{{ " + "(" * 2000 + "1" + ")" * 2000 + " }}", "nested too deeply"),
        ("{% for %}", "syntax error at line 1"),
    ],
)
def test_compile_errors_of_any_kind_are_located(source: str, reason: str) -> None:
    errors = check_source(source, "templates.t.email.subject")
    assert errors and errors[0].startswith("templates.t.email.subject: ") and reason in errors[0], errors


# -- named segments ---------------------------------------------------------------------------------


def _nested_segments(levels: int, fanout: int = 10) -> dict[str, Any]:
    named: dict[str, Any] = {"level0": {"attribute": "city", "op": "eq", "value": "Springfield"}}
    for level in range(1, levels + 1):
        named[f"level{level}"] = {"any": [{"segment": f"level{level - 1}"}] * fanout}
    return named


def test_named_segment_expansion_is_bounded_by_conditions() -> None:
    named = _nested_segments(5)
    assert compile_segment(named["level2"], named, path="segments.level2").params  # 100 conditions: fine
    with pytest.raises(SegmentError) as err:
        compile_segment(named["level5"], named, path="segments.level5")
    assert err.value.errors == [f"segments.level5: expands to more than {MAX_SEGMENT_NODES:,} conditions"]
    # A campaign's segment naming the bomb names the named segment too.
    with pytest.raises(SegmentError) as err:
        compile_segment({"segment": "level5"}, named, path="segment")
    assert err.value.errors == [
        f"segment: expands to more than {MAX_SEGMENT_NODES:,} conditions (through segments.level5)"
    ]


def test_named_segment_expansion_is_bounded_by_parameters_and_sql_size() -> None:
    wide = {"any": [{"attribute": "city", "op": "eq", "value": f"c{i}"} for i in range(MAX_SEGMENT_PARAMS + 1)]}
    with pytest.raises(SegmentError) as err:
        compile_segment(wide, {}, path="segments.wide")
    assert err.value.errors == [f"segments.wide: has more than {MAX_SEGMENT_PARAMS:,} parameters"]
    # Within both of those bounds, but each condition long: the SQL size bound.
    long_sql = {"any": [{"no_purchase_in_days": 30} for _ in range(MAX_SEGMENT_PARAMS - 1)]}
    with pytest.raises(SegmentError) as err:
        compile_segment(long_sql, {}, path="segments.long")
    assert err.value.errors == ["segments.long: compiles to more than 64 KB of SQL"]


# -- the check pool ----------------------------------------------------------------------------------


def _allocate(n: int) -> int:
    report_progress("templates.big.email.html")
    return len(bytearray(n))


def _spin() -> int:
    report_progress("templates.slow.sms.body")
    # One C-level operation no tracer can interrupt (bounded in templates; not here).
    return (10**100) ** 10**6


def _refuse() -> None:
    raise TemplateError(["templates.t.email.subject: refused"])


async def test_the_check_pool_stops_a_check_at_its_limits_and_goes_on() -> None:
    pool = CheckPool(processes=1)
    assert await pool.run("body", _allocate, 1024) == 1024
    with pytest.raises(TemplateError) as err:
        await pool.run("body", _allocate, 4 * 2**30)
    assert err.value.errors == ["templates.big.email.html: needs more memory than a check may use"]
    with pytest.raises(TemplateError) as err:
        await pool.run("body", _spin)
    assert err.value.errors[0].startswith("templates.slow.sms.body: the check was stopped: it took longer than")
    # The killed child was replaced; a located error raised in the child keeps its lines.
    with pytest.raises(TemplateError) as err:
        await pool.run("body", _refuse)
    assert err.value.errors == ["templates.t.email.subject: refused"]
    assert await pool.run("body", _allocate, 10) == 10


async def test_a_killed_check_does_not_fail_the_checks_beside_it() -> None:
    pool = CheckPool(processes=2)
    results = await asyncio.gather(pool.run("body", _spin), pool.run("body", _allocate, 10), return_exceptions=True)
    assert isinstance(results[0], TemplateError) and results[1] == 10
