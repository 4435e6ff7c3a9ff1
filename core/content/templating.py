"""The template engine: Jinja2's immutable sandbox with bounded work and output, the platform's
base layouts, and each channel's renderer. `core.content.rendering` is the one way to render a message.

A template may use variables, filters, tests, `if`, `for` (over bounded ranges and the
customer's data), `set` and macros. It may not load other templates (`include`, `extends`,
`import` are refused by name), and every render is bounded: see the limits below and the
README's "What a template may do".
"""

from __future__ import annotations

import difflib
import re
import string
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from types import FrameType
from typing import Any, Literal, overload

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, Undefined, meta, nodes
from jinja2.compiler import CodeGenerator, Frame, optimizeconst
from jinja2.exceptions import SecurityError
from jinja2.filters import (
    do_batch,
    do_center,
    do_indent,
    do_replace,
    do_round,
    do_tojson,
    do_wordwrap,
    sync_do_join,
    sync_do_slice,
)
from jinja2.runtime import Context, LoopContext, markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Cycler, Namespace, generate_lorem_ipsum
from markupsafe import Markup

from core.common.validation import InvalidInput
from core.tenants.config_schema import (
    Brand,
    EmailTemplate,
    PushTemplate,
    SmsTemplate,
    TemplateSet,
    WebhookTemplate,
)

# The variables the renderer provides to every template. Anything else is a typo.
CUSTOMER_VARIABLES = (
    "first_name",
    "last_name",
    "email",
    "phone",
    "locale",
    "time_zone",
    "loyalty_tier",
    "city",
    "country",
    "external_id",
    "attributes",
)
RENDER_VARIABLES = frozenset((*CUSTOMER_VARIABLES, "brand", "campaign", "variant", "unsubscribe_url"))

# Work limits, the same for every part of every channel (output limits are per part, see Part).
# A single C-level operation (a padding, a join, a big power) cannot be interrupted by the time
# budget's tracer, so every operation that can build a large value is checked against these
# BEFORE it runs; they are the guarantee, the tracer and the check pool's deadline are backstops.
MAX_RANGE = 1_000  # items one range() may produce: more than any message lists
MAX_STRING = 100_000  # characters of any value a template builds: the largest part is 500 KB of HTML
MAX_FORMAT_WIDTH = 1_000  # widths and precisions in '%…' and '{:…}' formats: column layouts need tens
MAX_INT_BITS = 4_096  # bits of an integer a template computes (* and **): prices and counts need 64
MAX_LIPSUM_PARAGRAPHS = 10  # lipsum(n): placeholder text for a draft, not a payload
MAX_LIPSUM_WORDS = 100  # lipsum(min=, max=): words per paragraph
MAX_BLOCK = 1_000_000  # characters a captured block makes ({% set %}…{% endset %}, a macro's or
#                       caller's output, a layout's render): above the largest part and its layout
MAX_ROUND_DIGITS = 100  # round(precision): round(5, -10**9) would compute 10**(10**9)
MAX_JSON_INDENT = 8  # tojson(indent): each level of each line repeats it
TIME_BUDGET_SECONDS = 0.1  # work one part's render may do, checked while loops and macros run
# Statements that would load other templates: there is no loader, and we say why by name.
_FORBIDDEN_TAGS: dict[type[nodes.Node], str] = {
    nodes.Include: "include",
    nodes.Extends: "extends",
    nodes.Import: "import",
    nodes.FromImport: "import",
}


class TemplateError(InvalidInput):
    """A template that does not compile, render or fit its limits; `errors` are `path: reason`."""


class RenderLimitError(Exception):
    """A render went over one of the limits: the message names the limit."""


class RenderFailure(Exception):
    """One part did not render (an error in the template or a limit); says which part and why."""

    def __init__(self, part: str, reason: str):
        super().__init__(f"{part}: {reason}")
        self.part = part
        self.reason = reason


@dataclass(frozen=True)
class Part:
    """One rendered part of a message and its output limit."""

    name: str
    max_chars: int
    html: bool = False
    single_line: bool = False


# -- the sandbox ----------------------------------------------------------------------------


def _check_size(n: int, what: str) -> None:
    if n > MAX_STRING:
        raise RenderLimitError(f"{what} would make {n:,} characters, over the limit of {MAX_STRING:,}")


def _size(value: Any, budget: int = MAX_STRING) -> int:
    """About how many characters `value` makes as text; counting stops once past `budget`, so
    a list holding one big string many times costs no more to measure than the limit."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, bool) or value is None:
        return 5
    if isinstance(value, int):
        return value.bit_length() // 3 + 1  # decimal digits, from above
    if isinstance(value, float):
        return 24
    items: Any
    if isinstance(value, Mapping):
        items = (x for pair in value.items() for x in pair)
    elif isinstance(value, list | tuple | set | frozenset):
        items = value
    else:
        return 16  # loop, namespace, macro, undefined: their text is short
    total = 2
    for item in items:
        total += _size(item, budget - total) + 2
        if total > budget:
            break
    return total


def _check_int_bits(bits: int, what: str) -> None:
    if bits > MAX_INT_BITS:
        raise RenderLimitError(f"{what} would make a number of about {bits:,} bits, over the limit of {MAX_INT_BITS:,}")


def _check_number(n: Any, what: str) -> None:
    """A width, count or size argument: refuse it before Python allocates for it."""
    if isinstance(n, int) and n > MAX_STRING:
        raise RenderLimitError(f"{what} {n:,} is over the limit of {MAX_STRING:,}")


def _check_width(width: Any) -> None:
    if width == "*":
        raise RenderLimitError("format width '*' is not allowed (widths must be written in the format)")
    if int(width) > MAX_FORMAT_WIDTH:
        raise RenderLimitError(f"format width '{width}' is over the limit of {MAX_FORMAT_WIDTH}")


# A '%' conversion: mapping key, flags, width (or *), precision (or *), length, type.
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-+ #0]*(\*|\d+)?(?:\.(\*|\d*))?[hlL]?(.?)", re.DOTALL)


def _check_percent(fmt: str, args: Any) -> None:
    """`fmt % args`: every width and precision within the limit, and the result's size bounded
    (each conversion at most its width or the largest argument) before formatting."""
    conversions = 0
    widest = 0
    for match in _PERCENT_SPEC.finditer(fmt):
        width, precision, kind = match.groups()
        if kind == "%" and width is None and precision is None:
            continue
        conversions += 1
        for number in (width, precision):
            if number:
                _check_width(number)
                widest = max(widest, int(number))
    if conversions:
        _check_size(len(fmt) + conversions * (widest + _size(args)), "format")


def _check_brace_format(fmt: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    """`fmt.format(...)`: no nested fields in a spec (`{:{w}}` would take its width from data),
    every number in a spec within the limit, and the result's size bounded before formatting."""
    fields = 0
    widest = 0
    for _literal, name, spec, _conversion in string.Formatter().parse(fmt):
        if name is None:
            continue
        fields += 1
        if spec and "{" in spec:
            raise RenderLimitError("a format spec may not contain a replacement field ('{:{}}')")
        for number in re.findall(r"\d+", spec or ""):
            _check_width(number)
            widest = max(widest, int(number))
    if fields:
        _check_size(len(fmt) + fields * (widest + _size(args) + _size(kwargs)), "format")


def _check_join(sep: str, items: list[Any]) -> None:
    size = len(sep) * max(len(items) - 1, 0)
    for item in items:
        size += _size(item, MAX_STRING - size + 1)
        if size > MAX_STRING:
            break
    _check_size(size, "join")


def _replaced_size(s: str, old: str, new: str, count: Any = -1) -> int:
    hits = s.count(old) if old else len(s) + 1
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    return len(s) + hits * max(0, len(new) - len(old))


def _bounded_range(*args: int) -> range:
    items = range(*args)
    if len(items) > MAX_RANGE:
        raise RenderLimitError(f"range of {len(items):,} items is over the limit of {MAX_RANGE:,}")
    return items


def _bounded_width(width: Any) -> None:
    if isinstance(width, int) and width > MAX_FORMAT_WIDTH:
        raise RenderLimitError(f"width {width} is over the limit of {MAX_FORMAT_WIDTH}")


def _center(value: str, width: int = 80) -> str:
    _bounded_width(width)
    return do_center(value, width)


def _indent(s: str, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
    _bounded_width(width if isinstance(width, int) else len(width))
    text = str(s)
    per_line = width if isinstance(width, int) else len(width)
    _check_size(len(text) + (text.count("\n") + 1) * max(per_line, 0), "indent")
    return do_indent(s, width, first, blank)


def _replace(eval_ctx: Any, s: str, old: str, new: str, count: int | None = None) -> str:
    _check_size(_replaced_size(str(s), str(old), str(new), count if count is not None else -1), "replace")
    return do_replace(eval_ctx, s, old, new, count)


def _format(value: str, *args: Any, **kwargs: Any) -> str:
    _check_percent(str(value), kwargs or args)
    return str(value) % (kwargs or args)


def _wordwrap(environment: Any, s: str, width: int = 79, *args: Any, **kwargs: Any) -> str:
    _bounded_width(width)
    wrapstring = kwargs.get("wrapstring", args[1] if len(args) > 1 else None) or "\n"
    text = str(s)
    lines = len(text) // max(int(width), 1) + sum(c.isspace() for c in text) + 1
    _check_size(len(text) + lines * len(str(wrapstring)), "wordwrap")
    return do_wordwrap(environment, s, width, *args, **kwargs)


def _join(eval_ctx: Any, value: Any, d: str = "", attribute: Any = None) -> str:
    items = list(value)  # the source is itself bounded; a generator is read once
    _check_join(str(d), items if attribute is None else [str(d)] * len(items))
    return sync_do_join(eval_ctx, items, d, attribute)


def _batch(value: Any, linecount: int, fill_with: Any = None) -> Any:
    if linecount > MAX_RANGE:
        raise RenderLimitError(f"batch size {linecount:,} is over the limit of {MAX_RANGE:,}")
    return do_batch(value, linecount, fill_with)


def _slice(value: Any, slices: int, fill_with: Any = None) -> Any:
    if slices > MAX_RANGE:
        raise RenderLimitError(f"slice count {slices:,} is over the limit of {MAX_RANGE:,}")
    return sync_do_slice(value, slices, fill_with)


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
    if n > MAX_LIPSUM_PARAGRAPHS or max > MAX_LIPSUM_WORDS or min > MAX_LIPSUM_WORDS:
        raise RenderLimitError(
            f"lipsum is limited to {MAX_LIPSUM_PARAGRAPHS} paragraphs of {MAX_LIPSUM_WORDS} words at most"
        )
    return str(generate_lorem_ipsum(n, html, min, max))


def _round(value: float, precision: int = 0, method: Any = "common") -> float:
    if isinstance(precision, int) and abs(precision) > MAX_ROUND_DIGITS:
        raise RenderLimitError(f"round precision {precision:,} is over the limit of {MAX_ROUND_DIGITS}")
    return do_round(value, precision, method)


def _tojson(eval_ctx: Any, value: Any, indent: int | None = None) -> Markup:
    if isinstance(indent, int) and indent > MAX_JSON_INDENT:
        raise RenderLimitError(f"tojson indent {indent:,} is over the limit of {MAX_JSON_INDENT}")
    _check_size(_size(value) * (1 + (indent or 0)), "tojson")
    return do_tojson(eval_ctx, value, indent)


# Keep the filters' calling conventions (pass_eval_context / pass_environment) on the wrappers.
_replace.jinja_pass_arg = do_replace.jinja_pass_arg  # type: ignore[attr-defined]
_wordwrap.jinja_pass_arg = do_wordwrap.jinja_pass_arg  # type: ignore[attr-defined]
_join.jinja_pass_arg = sync_do_join.jinja_pass_arg  # type: ignore[attr-defined]
_tojson.jinja_pass_arg = do_tojson.jinja_pass_arg  # type: ignore[attr-defined]


def _check_pad(s: str, width: Any, fillchar: str = " ") -> None:
    _check_number(width, "padding width")


def _check_expandtabs(s: str, tabsize: Any = 8) -> None:
    if isinstance(tabsize, int):
        _check_size(len(s) + s.count("\t") * max(tabsize, 0), "expandtabs")


def _check_replace_method(s: str, old: Any, new: Any, count: Any = -1) -> None:
    if isinstance(old, str) and isinstance(new, str):
        _check_size(_replaced_size(s, old, new, count), "replace")


# The methods a template may call, by the type of value (str covers Markup). Everything a
# marketer needs to tidy, test and split text and to read mappings; nothing that reaches
# outside the value (no encode, translate, mro, …). Attributes starting with "_" never pass.
_STR_METHODS = frozenset(
    "capitalize casefold center count endswith expandtabs find format format_map index isalnum isalpha "
    "isdecimal isdigit islower isnumeric isspace istitle isupper join ljust lower lstrip partition "
    "removeprefix removesuffix replace rfind rindex rjust rpartition rsplit rstrip split splitlines "
    "startswith strip swapcase title upper zfill".split()
)
_MARKUP_METHODS = _STR_METHODS | {"striptags", "unescape"}
_MAPPING_METHODS = frozenset({"get", "items", "keys", "values"})
_SEQUENCE_METHODS = frozenset({"count", "index"})
_LOOP_ATTRIBUTES = frozenset(
    "index index0 revindex revindex0 first last length depth depth0 previtem nextitem cycle changed".split()
)
_CYCLER_ATTRIBUTES = frozenset({"next", "current", "reset"})
# String methods that can build a large value: checked before the call (join is special-cased).
_STR_CALL_CHECKS: dict[str, Callable[..., None]] = {
    "ljust": _check_pad,
    "rjust": _check_pad,
    "center": _check_pad,
    "zfill": _check_pad,
    "expandtabs": _check_expandtabs,
    "replace": _check_replace_method,
}


class _CheckedCodeGenerator(CodeGenerator):
    """`a ~ b` compiles to a join the sandbox cannot intercept; route it through the environment."""

    @optimizeconst
    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        escape = "context.eval_ctx.autoescape" if frame.eval_ctx.volatile else repr(frame.eval_ctx.autoescape)
        self.write("environment.checked_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write(f"), {escape})")


class _Sandbox(ImmutableSandboxedEnvironment):
    """The sandbox with an allowlist of attributes and methods, and every operation that can
    build a large value (arithmetic, concatenation, padding, formats, joins) checked first."""

    code_generator_class = _CheckedCodeGenerator
    intercepted_binops = frozenset({"+", "*", "**", "%"})

    def __init__(self, **options: Any) -> None:
        super().__init__(undefined=StrictUndefined, **options)
        self.globals["range"] = _bounded_range
        self.globals["lipsum"] = _lipsum
        self.filters.update(
            center=_center,
            indent=_indent,
            replace=_replace,
            format=_format,
            wordwrap=_wordwrap,
            join=_join,
            batch=_batch,
            slice=_slice,
            round=_round,
            tojson=_tojson,
        )

    def concat(self, parts: Iterable[str]) -> str:
        """Every captured block and whole render joins its pieces here: check the size first
        (a loop yielding one long string a thousand times is cheap until it is joined)."""
        items = parts if isinstance(parts, list) else list(parts)
        size = 0
        for item in items:
            size += len(item)
        if size > MAX_BLOCK:
            raise RenderLimitError(f"a block would make {size:,} characters, over the limit of {MAX_BLOCK:,}")
        return "".join(items)

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        """The allowlist: only the listed methods of text, mappings and lists, the loop's and
        cycler's attributes, and a namespace's own values."""
        if attr.startswith("_"):
            return False
        if isinstance(obj, Markup):
            return attr in _MARKUP_METHODS
        if isinstance(obj, str):
            return attr in _STR_METHODS
        if isinstance(obj, Mapping):
            return attr in _MAPPING_METHODS
        if isinstance(obj, list | tuple):
            return attr in _SEQUENCE_METHODS
        if isinstance(obj, LoopContext):
            return attr in _LOOP_ATTRIBUTES
        if isinstance(obj, Cycler):
            return attr in _CYCLER_ATTRIBUTES
        return isinstance(obj, Namespace)

    def unsafe_undefined(self, obj: Any, attribute: str) -> Undefined:
        """A refused attribute says so by name when the template uses it."""
        return self.undefined(
            f"'{attribute}' of a {type(obj).__name__} value is not allowed in templates",
            name=attribute,
            obj=obj,
            exc=SecurityError,
        )

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        """Check string methods that can build a large value before they run."""
        target = getattr(obj, "__self__", None)
        if isinstance(target, str):
            name = getattr(obj, "__name__", "")
            if name == "join" and len(args) == 1 and not kwargs:
                items = list(args[0])  # read a generator once, then measure what it gave
                _check_join(target, items)
                args = (items,)
            elif name in _STR_CALL_CHECKS:
                _STR_CALL_CHECKS[name](target, *args, **kwargs)
        return super().call(context, obj, *args, **kwargs)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        """Check `+`, `*` (numbers and repetition), `**` and `%` formats before computing them."""
        if operator == "+":
            if isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple):
                _check_size(_size(left) + _size(right), "concatenation")
        elif operator == "*":
            if isinstance(left, int) and isinstance(right, int):
                _check_int_bits(abs(left).bit_length() + abs(right).bit_length(), "multiplication")
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(n, int):
                    _check_size(_size(seq) * max(n, 0), "repetition")
        elif operator == "**":
            if isinstance(right, int) and isinstance(left, int) and abs(left) > 1 and right > 0:
                bits = right * abs(left).bit_length()
                if bits > MAX_INT_BITS:
                    raise RenderLimitError(
                        f"exponent {right} is over the limit: the result would have about {bits:,} bits "
                        f"(at most {MAX_INT_BITS:,})"
                    )
        elif operator == "%" and isinstance(left, str):
            _check_percent(left, right)
        return super().call_binop(context, operator, left, right)

    def checked_concat(self, parts: tuple[Any, ...], autoescape: bool) -> str:
        """`a ~ b ~ …` with the result's size checked before it is built."""
        size = 0
        for part in parts:
            size += _size(part, MAX_STRING - size + 1)
            if size > MAX_STRING:
                break
        _check_size(size, "concatenation (~)")
        return markup_join(parts) if autoescape else str_join(parts)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """str.format and format_map, with their widths and result size checked before formatting."""
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        fmt: str = value.__self__
        is_map = value.__name__ == "format_map"

        def checked(*args: Any, **kwargs: Any) -> str:
            if is_map and len(args) == 1 and isinstance(args[0], Mapping):
                _check_brace_format(fmt, (), args[0])
            else:
                _check_brace_format(fmt, args, kwargs)
            return wrapped(*args, **kwargs)

        return checked


# Text parts must never be HTML-escaped; HTML parts always are.
_html_env = _Sandbox(autoescape=True)
_text_env = _Sandbox(autoescape=False)


@dataclass(frozen=True)
class _Compiled:
    template: Template
    # Loops and macros are the only way a short template can do unbounded work; only they
    # pay for the time budget's tracing.
    loops: bool


@lru_cache(maxsize=4096)
def _compiled(source: str, html: bool) -> _Compiled:
    env = _html_env if html else _text_env
    ast = env.parse(source)
    loops = any(True for _ in ast.find_all((nodes.For, nodes.Macro, nodes.CallBlock)))
    return _Compiled(env.from_string(ast), loops)


class _Budget:
    """A line tracer for template frames that stops a render once its time is spent."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        self.ticks = 0

    def global_trace(self, frame: FrameType, event: str, arg: Any) -> Callable[..., Any] | None:
        return self.local_trace if frame.f_code.co_filename == "<template>" else None

    def local_trace(self, frame: FrameType, event: str, arg: Any) -> Callable[..., Any] | None:
        self.ticks += 1
        if self.ticks % 256 == 0 and time.monotonic() > self.deadline:
            raise RenderLimitError(f"rendering took longer than the limit of {TIME_BUDGET_SECONDS * 1000:.0f} ms")
        return self.local_trace


def _collect(chunks: Iterator[str], part: Part) -> str:
    out: list[str] = []
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > part.max_chars:
            raise RenderLimitError(f"output is over the limit of {part.max_chars:,} characters")
        out.append(chunk)
    return "".join(out)


def render_part(source: str, ctx: dict[str, Any], part: Part) -> str:
    """Render one template part within the work and output limits; RenderFailure otherwise."""
    try:
        return _render_part(source, ctx, part)
    except RenderFailure:
        raise
    except RecursionError:
        raise RenderFailure(part.name, "recursion too deep") from None
    except Exception as exc:  # any error inside a tenant's template is that template's failure
        raise RenderFailure(part.name, str(exc) or type(exc).__name__) from None


def _render_part(source: str, ctx: dict[str, Any], part: Part) -> str:
    compiled = _compiled(source, part.html)
    if not compiled.loops:
        text = _collect(compiled.template.generate(ctx), part)
    else:
        previous = sys.gettrace()
        budget = _Budget(TIME_BUDGET_SECONDS)
        sys.settrace(budget.global_trace)
        try:
            text = _collect(compiled.template.generate(ctx), part)
        finally:
            sys.settrace(previous)
    if not part.html:
        text = text.strip() if part.single_line else text
    if part.single_line and ("\n" in text or "\r" in text):
        raise RenderLimitError("a line break is not allowed here (it must fit one header line)")
    return text


# -- checks at save time -----------------------------------------------------------------------


# Where a save-time check is: the check pool's child reports it, so a check killed at its
# deadline or memory limit is a 422 naming the template it was on (see core/content/check_pool.py).
_progress_hook: Callable[[str], None] | None = None


def set_progress_hook(hook: Callable[[str], None] | None) -> None:
    """Have `hook(path)` called as each save-time check starts (the check pool's children)."""
    global _progress_hook
    _progress_hook = hook


def report_progress(path: str) -> None:
    """Say which template (or config path) a save-time check is on now."""
    if _progress_hook is not None:
        _progress_hook(path)


def check_source(source: str, path: str, *, html: bool = False) -> list[str]:
    """Compile `source` in the sandbox; `path: reason` for syntax errors, loading statements
    (include, extends, import) and unknown variables (empty if fine)."""
    report_progress(path)
    env = _html_env if html else _text_env
    try:
        ast = env.parse(source)
        forbidden = [
            (tag, node.lineno) for node_type, tag in _FORBIDDEN_TAGS.items() for node in ast.find_all(node_type)
        ]
        # find_undeclared_variables compiles the template: an unknown filter or test is a
        # TemplateAssertionError (a TemplateSyntaxError) only then, and deep nesting a RecursionError.
        undeclared = meta.find_undeclared_variables(ast)
    except TemplateSyntaxError as exc:
        return [f"{path}: syntax error at line {exc.lineno}: {exc.message}"]
    except RecursionError:
        return [f"{path}: the template is nested too deeply"]
    except MemoryError:
        return [f"{path}: the template is too large to compile"]
    except Exception as exc:  # any failure to compile a tenant's template is that template's error
        return [f"{path}: the template does not compile: {exc or type(exc).__name__}"]
    errors = [
        f"{path}: '{tag}' is not allowed (line {line}): templates cannot load other templates"
        for tag, line in forbidden
    ]
    for name in sorted(undeclared):
        if name not in RENDER_VARIABLES and name not in env.globals:
            close = difflib.get_close_matches(name, sorted(RENDER_VARIABLES), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            errors.append(f"{path}: unknown variable '{name}'{hint}")
    return errors


# -- layouts, context and the channels' renderers ----------------------------------------------


@lru_cache(maxsize=8)
def _layout(name: str) -> Template:
    """A platform layout (trusted, small): HTML ones autoescape, text ones never do."""
    source = resources.files("core.content.layouts").joinpath(name).read_text(encoding="utf-8")
    return (_html_env if ".html" in name else _text_env).from_string(source)


@overload
def content_for_locale(tset: TemplateSet, channel: Literal["email"], locale: str) -> EmailTemplate | None: ...
@overload
def content_for_locale(tset: TemplateSet, channel: Literal["sms"], locale: str) -> SmsTemplate | None: ...
@overload
def content_for_locale(tset: TemplateSet, channel: Literal["push"], locale: str) -> PushTemplate | None: ...
@overload
def content_for_locale(tset: TemplateSet, channel: Literal["webhook"], locale: str) -> WebhookTemplate | None: ...
@overload
def content_for_locale(tset: TemplateSet, channel: str, locale: str) -> Any: ...
def content_for_locale(tset: TemplateSet, channel: str, locale: str) -> Any:
    """The most specific `channel` template for `locale`: exact, then language, then default."""
    for key in (locale, locale.split("-")[0]):
        content = tset.locales.get(key)
        if content is not None and getattr(content, channel) is not None:
            return getattr(content, channel)
    return getattr(tset, channel)


def email_for_locale(tset: TemplateSet, locale: str) -> EmailTemplate | None:
    """The most specific email template for `locale` (see content_for_locale)."""
    return content_for_locale(tset, "email", locale)


@lru_cache(maxsize=256)
def _brand_vars(brand: Brand) -> dict[str, Any]:
    # Brands are frozen and templates run in the immutable sandbox, so one dict can serve
    # every recipient of a config version instead of a model_dump() per message.
    return brand.model_dump()


def render_context(
    customer: dict[str, Any], brand: Brand, campaign: dict[str, Any], variant: str, unsubscribe_url: str
) -> dict[str, Any]:
    """The variables every template sees: the customer's fields, brand, campaign, variant, links."""
    ctx = {k: customer.get(k) for k in CUSTOMER_VARIABLES}
    attributes = customer.get("attributes")
    ctx["attributes"] = attributes if attributes is not None else {}
    ctx.update(brand=_brand_vars(brand), campaign=campaign, variant=variant, unsubscribe_url=unsubscribe_url)
    return ctx


# Output limits per part. A subject must fit one RFC 5322 header line (998 characters with
# "Subject: "); SMS as long as a concatenated SMS may be (1,600); push within FCM's 4 KB payload.
EMAIL_SUBJECT = Part("subject", 900, single_line=True)
EMAIL_HTML = Part("html", 500_000, html=True)
EMAIL_TEXT = Part("text", 200_000)
SMS_BODY = Part("body", 1_600)
PUSH_TITLE = Part("title", 250, single_line=True)
PUSH_BODY = Part("body", 2_000)
PUSH_DATA = Part("data", 1_024)
WEBHOOK_VALUE = Part("payload", MAX_STRING)


@dataclass(frozen=True)
class RenderedEmail:
    """A rendered email: subject, HTML inside the base layout, and the text part."""

    subject: str
    html: str
    text: str


@dataclass(frozen=True)
class RenderedSms:
    """A rendered SMS body with the opt-out footer."""

    body: str


@dataclass(frozen=True)
class RenderedPush:
    """A rendered push notification."""

    title: str
    body: str
    data: dict[str, str]


@dataclass(frozen=True)
class RenderedWebhook:
    """A rendered webhook payload."""

    payload: dict[str, Any]


def render_email(template: EmailTemplate, ctx: dict[str, Any], *, subject_override: str | None = None) -> RenderedEmail:
    """Render subject, HTML (inside the base layout) and text parts of one email."""
    subject = render_part(subject_override or template.subject, ctx, EMAIL_SUBJECT)
    body_html = render_part(template.html, ctx, EMAIL_HTML)
    html = _layout("email.html.j2").render(
        {**ctx, "subject": subject, "content": Markup(body_html), "locale": ctx.get("locale") or "en"}
    )
    if template.text is not None:
        text = render_part(template.text, ctx, EMAIL_TEXT)
    else:
        text = Markup(body_html).striptags()
    text += f"\n\n--\n{ctx['brand']['name']} · Unsubscribe: {ctx['unsubscribe_url']}\n"
    return RenderedEmail(subject=subject, html=html, text=text)


def render_sms(template: SmsTemplate, ctx: dict[str, Any]) -> RenderedSms:
    """The tenant's SMS body, then the platform opt-out footer on its own line (always)."""
    body = render_part(template.body, ctx, SMS_BODY).strip()
    footer = _layout("sms_footer.txt.j2").render(ctx).strip()
    return RenderedSms(body=f"{body}\n{footer}" if footer else body)


def render_push(template: PushTemplate, ctx: dict[str, Any]) -> RenderedPush:
    """Title, body and every data value of one notification."""
    return RenderedPush(
        title=render_part(template.title, ctx, PUSH_TITLE),
        body=render_part(template.body, ctx, PUSH_BODY).strip(),
        data={k: render_part(v, ctx, PUSH_DATA) for k, v in template.data.items()},
    )


def render_webhook(template: WebhookTemplate, ctx: dict[str, Any]) -> RenderedWebhook:
    """The payload with every string value rendered; keys and non-string values stay as they are."""
    return RenderedWebhook(payload=_render_payload(template.payload, ctx))


def _render_payload(value: Any, ctx: dict[str, Any]) -> Any:
    if isinstance(value, str):
        return render_part(value, ctx, WEBHOOK_VALUE)
    if isinstance(value, dict):
        return {k: _render_payload(v, ctx) for k, v in value.items()}
    if isinstance(value, list):
        return [_render_payload(v, ctx) for v in value]
    return value


def payload_strings(value: Any, path: str) -> list[tuple[str, str]]:
    """Every string inside a webhook payload (they are templates), with its path."""
    if isinstance(value, str):
        return [(path, value)]
    if isinstance(value, dict):
        return [found for k, v in value.items() for found in payload_strings(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [found for i, v in enumerate(value) for found in payload_strings(v, f"{path}[{i}]")]
    return []
