"""Checked ruleset → `Plan`: a generated Python evaluator plus prepared tables.

The evaluator is one function, generated deterministically: it loads the
profile and context fields it needs into locals, computes every segment once
(a segment shared by many rules costs one evaluation), then walks the rules
(`engine.codegen.rules`): with `optimize=True`, blocks of rules are indexed by the
attribute values they test (`engine.codegen.indexing`), so that a decision runs only
the rules its values can fire. Each rule runs in its own `try`, so a
run-time error (division by zero, a value of the wrong type) fails that rule
only and is reported at its `.rules` line through `rt.error`.

Plans are cached by content hash (sources and `COMPILER_VERSION`) and the
`optimize` flag.
"""

from __future__ import annotations

import gc
import hashlib
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from arbiter.dsl import CheckedRuleset, Diagnostic, RulesError
from arbiter.dsl import nodes as n
from arbiter.dsl.errors import ArbiterError
from arbiter.engine.codegen.expressions import Constants, ExprCompiler, TooComplex, Writer
from arbiter.engine.codegen.probes import build_probes, lazily
from arbiter.engine.codegen.rules import RuleWriter
from arbiter.engine.decision import runtime
from arbiter.engine.decision.policies import contact_key, fatigue_reads, policy_reads
from arbiter.engine.plan import ActionSpec, AggregateSpec, Needs, Plan, RuleInfo
from arbiter.engine.probes import Probes

#: Bump when generated code changes shape: it is part of every plan's cache key.
COMPILER_VERSION = "2"


@dataclass
class _Symbols:
    """Locals the generated function loads once, by kind, in first-use order."""

    profile: dict[str, str]
    context: dict[str, str]
    aggregates: dict[AggregateSpec, str]
    segments: dict[str, str]
    models: dict[str, str]
    experiments: dict[str, str]


class _Compiler:
    def __init__(self, checked: CheckedRuleset, optimize: bool, force: bool = False) -> None:
        self.c = checked
        self.optimize = optimize
        self.force = force
        self._lines = {name: text.splitlines() for name, text in checked.sources.items()}
        self.consts = Constants()
        self.sym = _Symbols({}, {}, {}, {}, {}, {})
        self.rules: list[RuleInfo] = []
        self.model_index = {name: i for i, name in enumerate(checked.models)}
        self.segment_index = {name: i for i, name in enumerate(checked.segments)}
        self.experiment_index = {name: i for i, name in enumerate(checked.experiments)}
        self.action_index = {name: i for i, name in enumerate(checked.actions)}
        self.aggregate_index: dict[AggregateSpec, int] = {}
        self.exprs = ExprCompiler(self.consts, self.resolve)
        self.exprs.aggregate = self._aggregate
        self.exprs.contacts = self._contacts
        #: Contact-history counters rules read (`contacts(channel sms within 7d)`), in order.
        self.contact_reads: dict[str, int] = {}

    # --------------------------------------------------------------- names

    def resolve(self, ref: n.Ref) -> str:
        """The source expression a name reads, registering the local it needs."""
        head, rest = ref.parts[0], ref.parts[1:]
        if head == "profile" and rest:
            return self.sym.profile.setdefault(rest[0], f"p{len(self.sym.profile)}")
        if head == "context" and rest:
            return self.sym.context.setdefault(rest[0], f"c{len(self.sym.context)}")
        if head == "experiment":
            return self.sym.experiments.setdefault(rest[0], f"x{self.experiment_index[rest[0]]}")
        if head == "action":
            return f"act.get({rest[0]!r})"
        if head in self.segment_index:
            return self.sym.segments.setdefault(head, f"s{self.segment_index[head]}")
        if head in self.model_index:
            i = self.model_index[head]
            if self.c.models[head].per_action:
                return f"ms.get({i})"
            local = self.sym.models.setdefault(head, f"m{i}")
            return f"({local} if {local} is not UNSET else ({local} := rt.model({i})))"
        if head in ("value", "weight", "priority"):
            return head
        raise ValueError(f"unresolved name {ref.dotted}")  # the checker prevents this

    def _contacts(self, e: n.Contacts) -> str:
        key = contact_key(e.scope, e.name, e.window_seconds)
        self.contact_reads.setdefault(key, e.window_seconds)
        return f"rt.contacts({key!r})"

    def _aggregate(self, e: n.Expr) -> str:
        if isinstance(e, n.LastSeen):
            spec = AggregateSpec("last", e.event, None, 0)
        else:
            assert isinstance(e, n.Aggregate)
            spec = AggregateSpec(e.fn, e.event, e.prop, e.window_seconds)
        if spec not in self.aggregate_index:
            self.aggregate_index[spec] = len(self.aggregate_index)
        return self.sym.aggregates.setdefault(spec, f"a{self.aggregate_index[spec]}")

    # ------------------------------------------------------------- compile

    def rule_id(self, kind: str, span: n.Span) -> int:
        """Register a rule (or segment) for traces and error messages; ids follow source order."""
        lines = self._lines.get(span.file, [])
        text = lines[span.line - 1].strip() if 0 < span.line <= len(lines) else ""
        self.rules.append(RuleInfo(len(self.rules), kind, span, text))
        return len(self.rules) - 1

    def evaluator(self) -> tuple[str, list[n.Span | None]]:
        rules = RuleWriter(self, self.c, self.optimize, self.force)
        body = Writer()
        body.indent()
        segment_locals = rules.body(body)
        # Memo locals belong to `evaluate`; the other generated functions compute afresh.
        self.exprs.memo = {}
        rules.epilogue(body)
        seg_tuple = "(" + "".join(f"{s}, " for s in segment_locals) + ")"
        body.line(f"return O, S, {seg_tuple}")

        head = Writer()
        head.line("def evaluate(P, C, A, rt):")
        head.indent()
        head.line("NOW = rt.now")
        head.line("O = []")
        head.line("S = set()")
        self.preamble(head)
        rules.preamble(head)
        return _join(head, body)

    def preamble(self, w: Writer) -> None:
        """Load the profile, context, aggregate and experiment locals the function reads."""
        for field, local in self.sym.profile.items():
            w.line(f"{local} = P.get({field!r})")
        for field, local in self.sym.context.items():
            w.line(f"{local} = C.get({field!r})")
        for spec, local in self.sym.aggregates.items():
            w.line(f"{local} = A[{self.aggregate_index[spec]}]")
        for name, local in self.sym.experiments.items():
            w.line(f"{local} = rt.variants[{self.experiment_index[name]}]")
        for local in self.sym.models.values():
            w.line(f"{local} = UNSET")

    def loaded(self) -> tuple[dict[str, str], dict[str, str]]:
        """The segment and customer-level model locals read so far: name -> local."""
        return self.sym.segments, self.sym.models

    def _function(self, signature: str, body: Writer) -> Writer:
        """`def <signature>:` with the time and the locals `body` uses, then `body`."""
        out = Writer()
        out.line(f"def {signature}:")
        out.indent()
        out.line("NOW = rt.now")
        self.preamble(out)
        out.dedent()
        out.splice(body)
        return out

    def fresh_symbols(self) -> None:
        """Start a new generated function: it loads its own locals."""
        # Each generated function loads its own locals; aggregate indexes are plan-wide.
        self.sym = _Symbols({}, {}, self.sym.aggregates, {}, {}, {})

    def _model_rows(self, per_action: bool) -> tuple[str, list[n.Span | None]]:
        w = Writer()
        for name, decl in self.c.models.items():
            if decl.per_action != per_action:
                continue
            self.fresh_symbols()
            i = self.model_index[name]
            body = Writer()
            body.indent()
            values = [self.exprs.value(e) for e in decl.inputs]
            body.line(f"row = [{', '.join(values)}]", decl.span)
            body.line("return None if None in row else row")
            if per_action:
                signature = f"action_model_inputs_{i}(P, C, A, rt, value, act)"
            else:
                signature = f"model_inputs_{i}(P, C, A, rt)"
            w.splice(self._function(signature, body))
        return w.source(), w.spans

    def model_inputs(self) -> tuple[str, list[n.Span | None]]:
        """One function per customer-level model: the input row, or None if any input is missing."""
        return self._model_rows(per_action=False)

    def action_model_inputs(self) -> tuple[str, list[n.Span | None]]:
        """One function per per-action model: its input row for one candidate action."""
        return self._model_rows(per_action=True)

    def bandit_features(self) -> tuple[str, list[n.Span | None]]:
        """One function per bandit: its shared (customer and context) features by name."""
        w = Writer()
        for j, decl in enumerate(self.c.bandits.values()):
            self.fresh_symbols()
            body = Writer()
            body.indent()
            items = [
                f"{feature_name(e, k)!r}: {self.exprs.value(e)}"
                for k, e in enumerate(decl.features)
            ]
            body.line("return {" + ", ".join(items) + "}", decl.span)
            w.splice(self._function(f"bandit_features_{j}(P, C, A, rt)", body))
        return w.source(), w.spans

    def formula(self) -> tuple[str, list[n.Span | None]]:
        """The arbitration formula for one candidate (default: value * weight)."""
        decl = self.c.arbitrate
        self.fresh_symbols()
        body = Writer()
        body.indent()
        if decl is None:
            body.line("return value * weight")
        else:
            body.line(f"return {self.exprs.value(decl.formula)}", decl.span)
        out = self._function("formula(P, C, A, rt, value, weight, priority, act, ms)", body)
        return out.source(), out.spans


def feature_name(e: n.Expr, position: int) -> str:
    """A bandit feature's name: the dotted path of a reference, else its position."""
    return e.dotted if isinstance(e, n.Ref) else f"f{position}"


def _join(head: Writer, body: Writer) -> tuple[str, list[n.Span | None]]:
    src = head.source() + body.source()
    return src, head.spans + body.spans


def _actions(checked: CheckedRuleset) -> tuple[ActionSpec, ...]:
    return tuple(
        ActionSpec(
            index=i,
            name=a.name,
            value=a.value,
            channels=frozenset(a.channels),
            cap=a.cap,
            consent=a.consent,
            valid_from=a.valid_from,
            valid_until=a.valid_until,
            tags=a.tags,
            fatigue=a.fatigue,
            payload=a.payload,
            attributes=a.attributes,
        )
        for i, a in enumerate(checked.actions.values())
    )


def content_hash(checked: CheckedRuleset) -> str:
    """sha256 over every source file (sorted by name) and the compiler version.

    Names are taken relative to the folder holding all the sources, so the
    same files give the same hash from any checkout or working directory
    (replay tells "the same ruleset version" by this hash).
    """
    h = hashlib.sha256(COMPILER_VERSION.encode())
    names = {name: os.path.abspath(name) for name in checked.sources}
    root = os.path.commonpath([os.path.dirname(p) for p in names.values()]) if names else ""
    for rel, name in sorted((os.path.relpath(p, root), name) for name, p in names.items()):
        h.update(rel.encode() + b"\0" + checked.sources[name].encode() + b"\0")
    return h.hexdigest()


_CACHE: OrderedDict[tuple[str, bool, tuple[str, ...]], Plan] = OrderedDict()
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 32


def compile_plan(checked: CheckedRuleset, *, optimize: bool = True) -> Plan:
    """Compile a checked ruleset to a `Plan`, reusing a cached plan with the same content hash.

    `optimize=False` lays every rule out one after another, as written: the
    reference the indexed evaluator is tested against. Both give the same
    decisions; the plan's `hash`/`version` name the ruleset and compiler, not
    the layout.

    Raises `RulesError` (code `too-complex`) for a ruleset nested deeper than
    Python can compile.
    """
    digest = content_hash(checked)
    # The file names too: the hash ignores where the files are, but the plan's spans name them.
    key = (digest, optimize, tuple(sorted(checked.sources)))
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    # Compiling allocates many small objects over the ruleset's large AST: cyclic GC passes
    # cost a quarter of the time at 10,000 rules. Reference counting still frees garbage.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        plan = _build(checked, digest, optimize)
    finally:
        if gc_was_enabled:
            gc.enable()
    with _CACHE_LOCK:
        # Another thread may have compiled the same text meanwhile: keep one object.
        plan = _CACHE.setdefault(key, plan)
        _CACHE.move_to_end(key)
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return plan


class GeneratedCodeError(ArbiterError):
    """Generated source failed to compile: a compiler bug, reported with the rule's place."""

    code = "generated-code"


# What CPython says when source nests deeper than its parser and compiler allow.
_TOO_DEEP = (
    "too many nested parentheses",
    "too many levels of indentation",
    "too many statically nested blocks",
)


def _too_complex(checked: CheckedRuleset, span: n.Span | None) -> RulesError:
    where = span or n.Span(next(iter(checked.sources), "<rules>"), 1, 1, 1, 1)
    diag = Diagnostic(
        "too-complex",
        "this is nested too deeply to compile; split it into segments or flatter rules",
        where,
    )
    return RulesError([diag], checked.sources)


def _generate(
    checked: CheckedRuleset, digest: str, optimize: bool, force: bool
) -> tuple[_Compiler, str, list[n.Span | None], Any]:
    comp = _Compiler(checked, optimize, force)
    try:
        parts = [
            comp.evaluator(),
            comp.model_inputs(),
            comp.action_model_inputs(),
            comp.bandit_features(),
            comp.formula(),
        ]
    except TooComplex as exc:
        raise _too_complex(checked, exc.span) from None
    source = "".join(src for src, _ in parts)
    spans = [s for _, sp in parts for s in sp]
    filename = f"<arbiter plan {checked.name} {digest[:12]}>"
    try:
        code = compile(source, filename, "exec")
    except SyntaxError as exc:
        span = spans[exc.lineno - 1] if exc.lineno and exc.lineno <= len(spans) else None
        if any(msg in str(exc.msg) for msg in _TOO_DEEP):
            raise _too_complex(checked, span) from None
        raise GeneratedCodeError(  # pragma: no cover - would be a compiler bug
            f"{span}: generated code does not compile: {exc.msg}"
        ) from exc
    return comp, source, spans, code


def _build(checked: CheckedRuleset, digest: str, optimize: bool, *, force: bool = False) -> Plan:
    """Generate, compile and load a plan (no cache). `force` indexes every block (tests)."""

    try:
        try:
            comp, source, spans, code = _generate(checked, digest, optimize, force)
        except RulesError:
            if not optimize:
                raise
            # The indexed layout nests deeper than the naive one; it may still fit.
            comp, source, spans, code = _generate(checked, digest, False, False)
    except RecursionError:
        raise _too_complex(checked, None) from None
    namespace: dict[str, Any] = dict(runtime.EXPORTED)
    namespace["K"] = tuple(comp.consts.values)
    exec(code, namespace)
    models = tuple(checked.models)
    per_action = {i for i, m in enumerate(checked.models.values()) if m.per_action}
    actions = _actions(checked)
    needs = Needs(
        profile_fields=tuple(checked.profile),
        aggregates=tuple(comp.aggregate_index),
        capped_actions=(
            *((a.name, a.cap.window_seconds) for a in actions if a.cap),
            # Contact policies and contact history: counters of their own, same storage.
            *dict.fromkeys([*policy_reads(checked.policies), *comp.contact_reads.items()]),
        ),
        fatigued_actions=(
            *(
                (a.name, a.fatigue.rejections, a.fatigue.window_seconds, a.fatigue.period_seconds)
                for a in actions
                if a.fatigue
            ),
            *fatigue_reads(checked.fatigue_policies),
        ),
        reads_consent=any(a.consent for a in actions),
    )
    default = comp.action_index.get(checked.default) if checked.default else None
    arbitrate = checked.arbitrate
    return Plan(
        name=checked.name,
        version=digest[:12],
        hash=digest,
        checked=checked,
        actions=actions,
        action_index=comp.action_index,
        evaluate=namespace["evaluate"],
        formula=namespace["formula"],
        needs=needs,
        rules=tuple(comp.rules),
        segment_names=tuple(checked.segments),
        model_names=models,
        default=default,
        top=arbitrate.top if arbitrate else None,
        max_per_tag=arbitrate.max_per_tag if arbitrate else None,
        source=source,
        filename=code.co_filename,
        line_spans=tuple(spans),
        model_inputs={
            i: namespace[f"model_inputs_{i}"] for i in range(len(models)) if i not in per_action
        },
        action_model_inputs={i: namespace[f"action_model_inputs_{i}"] for i in per_action},
        bandit_features=tuple(
            namespace[f"bandit_features_{j}"] for j in range(len(checked.bandits))
        ),
        arm_features=tuple(_arm_features(spec) for spec in actions),
        probes=lazily(lambda: _probes(checked, digest)),
    )


def _probes(checked: CheckedRuleset, digest: str) -> Probes:
    """Every condition probed part by part (`engine.codegen.probes`), for explanations.

    A compiler of its own, so the evaluator's memo locals and aggregate order stay as
    they are; the probes read aggregates in the order they list (`Probes.aggregates`).
    """
    comp = _Compiler(checked, optimize=False)
    return build_probes(comp, checked, f"<arbiter probes {checked.name} {digest[:12]}>")


def _arm_features(spec: ActionSpec) -> dict[str, Any]:
    """An action's features as a bandit arm: its name, value, tags and plain attributes."""
    feats: dict[str, Any] = {"action": spec.name, "value": spec.value}
    for tag in spec.tags:
        feats[f"tag_{tag}"] = True
    for key, val in spec.attributes.items():
        if isinstance(val, str | int | float | bool):
            feats[key] = val
    return feats
