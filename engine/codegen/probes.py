"""Conditions → probe functions: every part of every condition, for explanations.

For each segment, `if` and `when`/`suppress` rule, one generated function
evaluates the condition part by part (`engine.probes` describes the contract)::

    def probe_4(P, C, A, rt, SEG, M):
        NOW = rt.now
        p0 = P.get('visits')            # the same locals the evaluator loads …
        c0 = C.get('page')
        s0 = SEG[0]                     # … but segments as the evaluator computed them,
        m0 = M.get(0)                   # and only the model scores it computed
        R = []
        V = []
        try:                            # part 0: the whole condition
            r = True if (s0 is True and c0 == '/account') else (False if (…) else None)
        except Exception as exc:
            r = Failed(exc)
        R.append(r)
        …                               # part 1, 2, …: preorder through and/or/not
        try:                            # a leaf's operand, for the explanation
            r = c0
        except Exception as exc:
            r = Failed(exc)
        V.append(r)
        return R, V

Each part's truth is `ExprCompiler.truth`/`falsity` of that part, the very code
the evaluator runs for it; the only differences are the ones a second look
needs: nothing is memoized across parts, segments are read rather than
recomputed, and a model is never scored (a score the decision did not compute
is missing; a model whose input row raised raises the same error again).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple, Protocol

from arbiter.dsl import CheckedRuleset, printing
from arbiter.dsl import nodes as n
from arbiter.engine.codegen.expressions import Constants, ExprCompiler, TooComplex, Writer
from arbiter.engine.decision import runtime
from arbiter.engine.plan import AggregateSpec
from arbiter.engine.probes import Part, Probe, ProbeFn, Probes, RuleProbe

_LITERALS = (n.Number, n.String, n.Bool, n.Percent, n.Duration, n.TimeLit, n.ListLit)


class ProbeHost(Protocol):
    """What the probe writer needs from the compiler: its names and expression compiler."""

    consts: Constants
    exprs: ExprCompiler
    aggregate_index: dict[AggregateSpec, int]

    def fresh_symbols(self) -> None: ...

    def preamble(self, w: Writer) -> None: ...

    def loaded(self) -> tuple[dict[str, str], dict[str, str]]:
        """The segment and model locals the current function reads: name -> local."""
        ...


def build_probes(host: ProbeHost, checked: CheckedRuleset, filename: str) -> Probes:
    """Generate, compile and load the probes of every condition of a checked ruleset."""
    writer = _ProbeWriter(host, checked)
    rules, ifs, segments = writer.walk()
    names = list(writer.functions)
    sources = [writer.functions[name][0] for name in names]
    source = "".join(sources)
    namespace: dict[str, Any] = dict(runtime.EXPORTED)
    try:
        code = compile(source, filename, "exec")
    except (SyntaxError, RecursionError, MemoryError):
        # A condition nested deeper than Python compiles: probe the others, one by one.
        code = None
    namespace["K"] = tuple(host.consts.values)
    if code is not None:
        exec(code, namespace)
    else:
        for name, src in zip(names, sources, strict=True):
            try:
                exec(compile(src, filename, "exec"), namespace)
            except (SyntaxError, RecursionError, MemoryError):
                namespace[name] = _unavailable(*writer.functions[name][1:])

    def probe(name: str, parts: tuple[Part, ...]) -> Probe:
        fn: ProbeFn = namespace[name]
        return Probe(parts, fn)

    return Probes(
        aggregates=tuple(spec.key for spec in host.aggregate_index),
        segments={seg: probe(*found) for seg, found in segments.items()},
        ifs=tuple(probe(*found) for found in ifs),
        rules=tuple(RuleProbe(rid, rule, path, probe(*found)) for rid, rule, path, found in rules),
        source=source,
    )


def _unavailable(parts: int, values: int) -> ProbeFn:
    failed = runtime.Failed("too deeply nested to explain")

    def run(*_: Any) -> tuple[list[Any], list[Any]]:
        return [failed] * parts, [failed] * values

    return run


class _Found(NamedTuple):
    """A condition's probe function (by name) and its parts."""

    function: str
    parts: tuple[Part, ...]


_Path = tuple[tuple[int, bool], ...]
_Rule = tuple[int, n.WhenRule | n.SuppressRule, _Path, _Found]


class _ProbeWriter:
    def __init__(self, host: ProbeHost, checked: CheckedRuleset) -> None:
        self.host = host
        self.c = checked
        #: function name -> (source, number of parts, number of operand values)
        self.functions: dict[str, tuple[str, int, int]] = {}
        self.segment_index = {name: i for i, name in enumerate(checked.segments)}
        self.model_index = {name: i for i, name in enumerate(checked.models)}

    def walk(self) -> tuple[list[_Rule], list[_Found], dict[str, _Found]]:
        """Probe every segment, then every rule depth first, numbering rules as the
        evaluator does (`RuleWriter.body`: segments first, then rules in source order)."""
        segments = {name: self.probe(seg.expr) for name, seg in self.c.segments.items()}
        ifs: list[_Found] = []
        rules: list[_Rule] = []
        next_id = len(self.c.segments)

        def visit(block: tuple[n.Rule, ...], path: _Path) -> None:
            nonlocal next_id
            for rule in block:
                rid = next_id
                next_id += 1
                if isinstance(rule, n.IfBlock):
                    ifs.append(self.probe(rule.condition))
                    k = len(ifs) - 1
                    visit(rule.then, (*path, (k, True)))
                    visit(rule.orelse, (*path, (k, False)))
                else:
                    assert isinstance(rule, n.WhenRule | n.SuppressRule)
                    rules.append((rid, rule, path, self.probe(rule.condition)))

        visit(self.c.rules, ())
        return rules, ifs, segments

    def probe(self, expr: n.Expr) -> _Found:
        """One condition's function; returns its name and its parts."""
        host = self.host
        host.fresh_symbols()
        parts: list[Part] = []
        body = Writer()
        body.indent()
        body.line("R = []")
        body.line("V = []")
        try:
            values = self._part(body, expr, parts, [0])
        except (TooComplex, RecursionError):
            # Nested deeper than a probe can be written: one part, that says so.
            parts, values = [Part(expr, (), ())], 0
            body = Writer()
            body.indent()
            body.line(f"R = [{self.host.consts.add(runtime.Failed('too complex to explain'))}]")
            body.line("V = []")
        body.line("return R, V")
        name = f"probe_{len(self.functions)}"
        out = Writer()
        out.line(f"def {name}(P, C, A, rt, SEG, M):", expr.span)
        out.indent()
        out.line("NOW = rt.now")
        host.preamble(out)
        segment_locals, model_locals = host.loaded()
        for seg, local in segment_locals.items():
            out.line(f"{local} = SEG[{self.segment_index[seg]}]")
        for model, local in model_locals.items():
            # A score the decision did not compute is missing (None), never computed here;
            # one whose input row raised is UNSET, so asking again raises the same error.
            out.line(f"{local} = M.get({self.model_index[model]})")
        out.dedent()
        out.splice(body)
        self.functions[name] = (out.source(), len(parts), values)
        return _Found(name, tuple(parts))

    def _part(self, w: Writer, e: n.Expr, parts: list[Part], counter: list[int]) -> int:
        """Write one part (then its own parts, preorder); returns the operand values so far."""
        exprs = self.host.exprs
        index = len(parts)
        parts.append(Part(e, (), ()))
        try:
            code = f"True if {exprs.truth(e)} else (False if {exprs.falsity(e)} else None)"
        except TooComplex:
            code = f"{self.host.consts.add(runtime.Failed('too complex to explain'))}"
        self._attempt(w, code, "R", e.span)
        children: list[int] = []
        operands: list[tuple[str, int]] = []
        if isinstance(e, n.BoolOp) or (isinstance(e, n.Unary) and e.op == "not"):
            for child in _children(e):
                children.append(len(parts))
                self._part(w, child, parts, counter)
        else:
            for operand in _operands(e):
                self._attempt(w, exprs.value(operand), "V", operand.span)
                operands.append((printing.expr(operand), counter[0]))
                counter[0] += 1
        parts[index] = Part(e, tuple(children), tuple(operands))
        return counter[0]

    @staticmethod
    def _attempt(w: Writer, code: str, into: str, span: n.Span) -> None:
        w.line("try:", span)
        w.indent()
        w.line(f"r = {code}", span)
        w.dedent()
        w.line("except Exception as exc:")
        w.indent()
        w.line("r = Failed(exc)")
        w.dedent()
        w.line(f"{into}.append(r)")


def _children(e: n.Expr) -> Iterator[n.Expr]:
    if isinstance(e, n.BoolOp):
        yield from e.operands
    elif isinstance(e, n.Unary):
        yield e.operand


def _operands(e: n.Expr) -> list[n.Expr]:
    """The operands of a leaf whose values an explanation shows: not literals."""
    if isinstance(e, n.Binary):
        parts: tuple[n.Expr, ...] = (e.left, e.right)
    elif isinstance(e, n.Between):
        parts = (e.operand, e.low, e.high)
    elif isinstance(e, n.Presence):
        parts = (e.operand,)
    else:
        parts = (e,)
    return [p for p in parts if not isinstance(p, _LITERALS)]


def lazily(build: Callable[[], Probes]) -> Callable[[], Probes]:
    """`build`, run once on first call (thread-safe), its result kept."""
    lock = threading.Lock()
    built: list[Probes] = []

    def probes() -> Probes:
        if not built:
            with lock:
                if not built:
                    built.append(build())
        return built[0]

    return probes
