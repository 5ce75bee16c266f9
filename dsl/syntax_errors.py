"""Friendly syntax errors: Lark's exceptions → a `Diagnostic` a marketer can act on.

Common mistakes are recognised from a table of bad examples (`SYNTAX_CASES`),
the way Lark's `match_examples` does it: each example is parsed once, and an
error whose LALR state is the same as an example's gets that example's code,
message and hint. We compare the state number only; Lark's own comparison also
requires the same stack depth, which would stop an example written at the top
level from matching the same mistake inside an `if { … }` block. Because LALR
merges states, each case also has a guard that looks at the offending token or
text, so that a state shared with another construct cannot give a wrong hint.
Anything not in the table gets the generic `syntax` code with the tokens that
would have been accepted.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

from lark import Lark, Token
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from arbiter.dsl import nodes as n
from arbiter.dsl.errors import Diagnostic, did_you_mean

#: Words that start a top-level declaration.
DECLARATION_KEYWORDS = (
    "include", "profile", "context", "event", "model", "segment", "action", "when",
    "suppress", "if", "bandit", "arbitrate", "holdout", "experiment", "default", "scenario",
)  # fmt: skip

#: Declarations that never appear inside braces: one of these at the start of a
#: line while a brace is open means the brace was never closed.
_NEVER_NESTED = frozenset(DECLARATION_KEYWORDS) - {"when", "suppress", "if", "profile", "context"}


@dataclass(frozen=True, slots=True)
class Mistake:
    """What the guard of a case sees: the exception and the text around it."""

    exc: UnexpectedInput
    text: str
    token: str  # the offending token or character ("" at end of file)
    offset: int  # where it starts in `text`


@dataclass(frozen=True, slots=True)
class SyntaxCase:
    """One common mistake: its code, how to explain it, and bad examples that show it."""

    code: str
    message: str  # may use {token}
    hint: str | None
    examples: tuple[str, ...]
    guard: Callable[[Mistake], bool]
    by_state: bool = True  # False: the guard alone decides (lexer-level mistakes)


def _missing_offer(m: Mistake) -> bool:
    """A name right after a `when` condition, with no `offer` (or block edge) in between."""
    if not isinstance(m.exc, UnexpectedToken) or m.exc.token.type != "NAME":
        return False
    whens = list(re.finditer(r"\bwhen\b", m.text[: m.offset]))
    if not whens:
        return False
    between = m.text[whens[-1].end() : m.offset]
    return re.search(r"\boffer\b|[{}]", between) is None


def _is_token(value: str) -> Callable[[Mistake], bool]:
    return lambda m: m.token == value


def _unexpected_name(m: Mistake) -> bool:
    return isinstance(m.exc, UnexpectedToken) and m.exc.token.type == "NAME"


def _int_for_duration(m: Mistake) -> bool:
    return (
        isinstance(m.exc, UnexpectedToken)
        and m.exc.token.type == "INT"
        and "DURATION" in m.exc.expected
    )


def _char_in(chars: str) -> Callable[[Mistake], bool]:
    return lambda m: isinstance(m.exc, UnexpectedCharacters) and m.token in chars


def _logical(m: Mistake) -> bool:
    if not isinstance(m.exc, UnexpectedCharacters):
        return False
    return m.token in "&|" or (m.token == "!" and m.text[m.offset + 1 : m.offset + 2] != "=")


def _always(m: Mistake) -> bool:
    return True


#: The table, tried in order; the first case whose state (when `by_state`) and guard match wins.
SYNTAX_CASES: tuple[SyntaxCase, ...] = (
    SyntaxCase(
        "missing-ruleset",
        "a .rules file starts with 'ruleset <name>'",
        "add a first line such as: ruleset retail_web",
        (
            "profile { visits: int }",
            "action welcome { value 5 }",
            "when true offer welcome",
            "",
        ),
        _always,
    ),
    SyntaxCase(
        "single-quote",
        "strings use double quotes",
        "write \"home\", not 'home'",
        ("ruleset r\nwhen context.page == 'home' offer x",),
        _char_in("'"),
        by_state=False,
    ),
    SyntaxCase(
        "logical-operator",
        "unexpected {token!r}: conditions use the words 'and', 'or' and 'not'",
        "write: a and b, a or b, not a",
        (
            "ruleset r\nwhen a && b offer x",
            "ruleset r\nwhen a || b offer x",
            "ruleset r\nwhen !a offer x",
        ),
        _logical,
        by_state=False,
    ),
    SyntaxCase(
        "syntax",
        "'then' is not a word of the language",
        "write: if <condition> { … } or when <condition> offer <action>",
        (),
        _is_token("then"),
        by_state=False,
    ),
    SyntaxCase(
        "double-equals",
        "'=' assigns; to compare, use '=='",
        None,  # the reader's own line, corrected (see syntax_diagnostic)
        (
            "ruleset r\nwhen a = 1 offer x",
            "ruleset r\nwhen a.b = 1 offer x",
            "ruleset r\nwhen f(a) = 1 offer x",
            "ruleset r\nwhen (a) = 1 offer x",
            "ruleset r\nwhen 1 = a offer x",
            'ruleset r\nwhen "x" = a offer x',
            "ruleset r\nif a = 1 { }",
        ),
        _is_token("="),
    ),
    SyntaxCase(
        "missing-offer",
        "expected 'offer' before {token!r}",
        "a rule reads: when <condition> offer <action>",
        (
            "ruleset r\nwhen a b",
            "ruleset r\nwhen a.b c",
            "ruleset r\nwhen a > 1 b",
            "ruleset r\nwhen a > 1.5 b",
            'ruleset r\nwhen a == "x" b',
            "ruleset r\nwhen (a) b",
            "ruleset r\nwhen f(a) b",
            "ruleset r\nwhen a > 2h b",
            "ruleset r\nwhen a > 5% b",
            "ruleset r\nwhen a > 2026-01-01 b",
            "ruleset r\nwhen a is missing b",
            "ruleset r\nwhen a is present b",
            "ruleset r\nwhen true b",
            "ruleset r\nwhen false b",
            "ruleset r\nwhen a in [b] c",
            "ruleset r\nwhen count(e within 1d) b",
            "ruleset r\nwhen last_seen(e) b",
            "ruleset r\nif a { when a b }",
        ),
        _missing_offer,
    ),
    SyntaxCase(
        "missing-unit",
        "a duration needs a unit: {token}min, {token}h, {token}d, {token}w or {token}mo",
        "e.g. within 24h, cap 1 per 7d",
        (
            "ruleset r\nwhen count(a within 24) > 1 offer x",
            "ruleset r\naction x { cap 1 per 7 }",
            'ruleset r\nscenario "s" { events { a: 1 3 ago } }',
        ),
        _int_for_duration,
    ),
    SyntaxCase(
        "missing-comma",
        "missing ',' before {token!r}",
        'separate entries with commas: { visits: 3, country: "FR" }',
        (
            'ruleset r\nscenario "s" { profile { a: 1 b: 2 } }',
            'ruleset r\nscenario "s" { profile { a: "x" b: 2 } }',
            'ruleset r\nscenario "s" { profile { a: [1] b: 2 } }',
            "ruleset r\naction x { payload { a: 1 b: 2 } }",
        ),
        _unexpected_name,
    ),
    SyntaxCase(
        "unknown-statement",
        "{token!r} does not start a declaration",
        None,  # filled in with "did you mean" when a keyword is close
        (
            "ruleset r\nofer x",
            "ruleset r\naction x { value 1 }\nrule x",
            "ruleset r\nprofile { a: number }\nsegmnt s = true",
        ),
        _unexpected_name,
    ),
)


# How terminals are named in error messages.
_TERMINAL_WORDS = {
    "NAME": "a name",
    "STRING": "a string",
    "INT": "a whole number",
    "NUMBER": "a number",
    "DURATION": "a duration like 24h",
    "DATE": "a date like 2026-12-01",
    "DATETIME": "a date-time",
    "PERCENT": "a percentage like 5%",
    "COMP_OP": "a comparison",
    "ADD_OP": "'+' or '-'",
    "MUL_OP": "'*' or '/'",
    "AGGREGATE": "an aggregate (count, sum, …)",
    "$END": "end of file",
}


def expected_words(parser: Lark, expected: set[str] | frozenset[str]) -> str:
    """The accepted terminals, as words: "'offer', a name or …"."""
    literals = {t.name: str(t.pattern.value) for t in parser.terminals if t.pattern.type == "str"}
    words = set()
    for term in expected:
        if term in _TERMINAL_WORDS:
            words.add(_TERMINAL_WORDS[term])
        elif term in literals:
            words.add(f"'{literals[term]}'")
        else:
            words.add(term.lower())
    ordered = sorted(words)
    if len(ordered) > 8:
        ordered = [*ordered[:8], "…"]
    if len(ordered) <= 2:
        return " or ".join(ordered)
    if ordered[-1] == "…":
        return ", ".join(ordered)
    return ", ".join(ordered[:-1]) + " or " + ordered[-1]


@cache
def _example_states(parser: Lark) -> dict[str, tuple[tuple[int, str], ...]]:
    """Each case's examples as (LALR state, accepted terminals) pairs, computed once."""
    out: dict[str, tuple[tuple[int, str], ...]] = {}
    for case in SYNTAX_CASES:
        states = []
        for example in case.examples:
            try:
                parser.parse(example)
            except UnexpectedInput as exc:
                states.append(_state_key(exc))
        out[case.code] = tuple(states)
    return out


def _state_key(exc: UnexpectedInput) -> tuple[int, str]:
    state = getattr(exc, "state", None)
    position = getattr(state, "position", -1)
    accepts = getattr(exc, "accepts", None) or getattr(exc, "expected", None) or ()
    return int(position) if isinstance(position, int) else -1, ",".join(sorted(accepts))


def classify(exc: UnexpectedInput, text: str, parser: Lark) -> SyntaxCase | None:
    """The table's case for this error, or None when it is not a known mistake."""
    mistake = _mistake(exc, text)
    key = _state_key(exc)
    states = _example_states(parser)
    for case in SYNTAX_CASES:
        if case.by_state and key[0] not in {s for s, _ in states[case.code]}:
            continue
        if case.guard(mistake):
            return case
    return None


def _mistake(exc: UnexpectedInput, text: str) -> Mistake:
    if isinstance(exc, UnexpectedCharacters):
        offset = exc.pos_in_stream or 0
        return Mistake(exc, text, text[offset : offset + 1], offset)
    if isinstance(exc, UnexpectedToken) and exc.token.type != "$END":
        tok: Token = exc.token
        return Mistake(exc, text, str(tok), tok.start_pos or 0)
    return Mistake(exc, text, "", len(text))


def open_braces(text: str, end: int) -> list[int]:
    """Offsets of the `{` still open at `end`, outermost first; strings and comments skipped."""
    return _scan_braces(text, end)[0]


def _scan_braces(text: str, end: int) -> tuple[list[int], tuple[int, int] | None]:
    """The `{` still open at `end`, and the first brace that indentation says is unclosed.

    The second value is `(offset of the '{', offset of the '}')` for the first `}`
    that starts its line, is indented less than the line of the `{` it closes, and
    lines up with an outer open `{` instead: the `}` of `action a {` after a
    `payload {` whose own `}` is missing. The marketer forgot the inner one.
    """
    stack: list[int] = []
    suspect: tuple[int, int] | None = None
    i = 0
    while i < end:
        ch = text[i]
        if ch == '"':
            i += 1
            while i < end and text[i] not in '"\n':
                i += 2 if text[i] == "\\" else 1
        elif ch == "#":
            while i < end and text[i] != "\n":
                i += 1
        elif ch == "{":
            stack.append(i)
        elif ch == "}" and stack:
            opened = stack.pop()
            if suspect is None and _starts_line(text, i):
                closing = _indent(text, i)
                if _indent(text, opened) > closing and any(
                    _indent(text, outer) == closing for outer in stack
                ):
                    suspect = (opened, i)
        i += 1
    return stack, suspect


def _starts_line(text: str, offset: int) -> bool:
    start = text.rfind("\n", 0, offset) + 1
    return text[start:offset].strip() == ""


def _indent(text: str, offset: int) -> int:
    """The indentation of the line `offset` is on."""
    start = text.rfind("\n", 0, offset) + 1
    line = text[start:]
    return len(line) - len(line.lstrip(" \t"))


def _block_left_open(exc: UnexpectedInput, m: Mistake) -> bool:
    """A name starting a line where a `}` could close a `{ key: value }` block, and that is
    not itself the next `key:` (which would be a missing comma)."""
    if not isinstance(exc, UnexpectedToken) or not re.fullmatch(r"[A-Za-z_]\w*", m.token):
        return False
    if "RBRACE" not in exc.expected or not _starts_line(m.text, m.offset):
        return False
    after = m.text[m.offset + len(m.token) :].lstrip(" \t")
    return not after.startswith(":")


def _line_col(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


def _unclosed_brace(exc: UnexpectedInput, text: str, filename: str) -> Diagnostic | None:
    """An unclosed `{`: at end of file, before an `else`, or when a new declaration
    starts inside the block. Points at the `{` and says where the block should end."""
    mistake = _mistake(exc, text)
    at_end = isinstance(exc, UnexpectedEOF) or (
        isinstance(exc, UnexpectedToken) and exc.token.type == "$END"
    )
    hint = "add the matching '}' where the block ends"
    if at_end:
        stack, suspect = _scan_braces(text, len(text))
        noticed = "the end of the file"
    elif mistake.token == "else" and isinstance(exc, UnexpectedToken):
        stack, suspect = _scan_braces(text, mistake.offset)
        noticed = f"the 'else' on line {_line_col(text, mistake.offset)[0]}"
        hint = "close the 'if' block before its else: } else {"
    elif _block_left_open(exc, mistake):
        # `payload { a: 1` then, on the next line, `tags [x]`: the value's `}` is missing.
        stack, suspect = _scan_braces(text, mistake.offset)
        noticed = f"line {_line_col(text, mistake.offset)[0]}"
    else:
        # The error line starts a top-level declaration while a block is still open.
        line_start = text.rfind("\n", 0, mistake.offset) + 1
        first = re.match(r"\s*([A-Za-z_]+)", text[line_start:])
        if first is None or first.group(1) not in _NEVER_NESTED:
            return None
        stack, suspect = _scan_braces(text, line_start)
        noticed = f"line {_line_col(text, line_start)[0]}"
    if not stack:
        return None
    if suspect is not None:
        opened, closing = suspect
        line, col = _line_col(text, opened)
        end_line = _line_col(text, closing)[0]
        message = (
            f"this '{{' is never closed; its block should end before line {end_line}"
            f" (the '}}' there closes the block around it)"
        )
        span = n.Span(filename, line, col, line, col + 1)
        return Diagnostic(
            "unclosed-brace", message, span, hint=f"add a '}}' before line {end_line}"
        )
    line, col = _line_col(text, stack[-1])
    span = n.Span(filename, line, col, line, col + 1)
    return Diagnostic(
        "unclosed-brace", f"this '{{' is never closed (noticed at {noticed})", span, hint=hint
    )


def syntax_diagnostic(exc: UnexpectedInput, text: str, filename: str, parser: Lark) -> Diagnostic:
    """The diagnostic for a Lark parse error: a known mistake from the table, else generic."""
    unclosed = _unclosed_brace(exc, text, filename)
    if unclosed is not None:
        return unclosed
    mistake = _mistake(exc, text)
    line, column = _line_col(text, mistake.offset)
    width = max(1, len(mistake.token))
    span = n.Span(filename, line, column, line, column + width)
    case = classify(exc, text, parser)
    if case is not None:
        hint = case.hint
        if case.code == "unknown-statement":
            hint = did_you_mean(mistake.token, DECLARATION_KEYWORDS)
        elif case.code == "double-equals":
            # Show the reader's own line, corrected.
            start = text.rfind("\n", 0, mistake.offset) + 1
            end = text.find("\n", mistake.offset)
            line_text = text[start : len(text) if end < 0 else end]
            fixed = (
                line_text[: mistake.offset - start] + "==" + line_text[mistake.offset - start + 1 :]
            )
            hint = f"write: {fixed.strip()}"
        return Diagnostic(case.code, case.message.format(token=mistake.token), span, hint=hint)
    return _generic(exc, mistake, span, parser)


def _generic(exc: UnexpectedInput, mistake: Mistake, span: n.Span, parser: Lark) -> Diagnostic:
    if isinstance(exc, UnexpectedCharacters):
        return Diagnostic("syntax", f"unexpected character {mistake.token!r}", span)
    if isinstance(exc, UnexpectedEOF) or not mistake.token:
        expected = expected_words(parser, set(getattr(exc, "expected", ()) or ()))
        return Diagnostic("syntax", f"unexpected end of file, expected {expected}", span)
    assert isinstance(exc, UnexpectedToken)
    expected = expected_words(parser, exc.expected)
    hint = None
    if exc.token.type == "NAME" and "NAME" not in exc.expected:
        hint = f"'{mistake.token}' is not a keyword here"
    return Diagnostic(
        "syntax", f"unexpected {mistake.token!r}, expected {expected}", span, hint=hint
    )
