"""The rule tree walked with what is known on each path: rules and actions that add nothing.

`RulePaths` is mixed into the checker (`dsl.checker`). It walks the checked
rules keeping the facts that hold inside each block (in `if X { … }`, X is
true; in its `else`, X is not true), and warns, only when certain
(`dsl.reachability`):

- `unreachable-rule`: a rule or block whose condition can never hold there;
- `shadowed-rule`: a `when` repeating an earlier one on its path;
- `unofferable-action`: an action every offering rule of which is blocked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from arbiter.dsl import nodes as n
from arbiter.dsl.checked import CheckedRuleset
from arbiter.dsl.reachability import Fact, Reasoner, always_true


@dataclass(frozen=True, slots=True)
class _PathFact:
    """A fact that holds inside a block, and the `if` it comes from (for messages)."""

    fact: Fact
    span: n.Span


class RulePaths:
    """Path-aware rule warnings; the host class provides `out`, `warn` and `_reasoner`."""

    out: CheckedRuleset
    _reasoner: Reasoner
    # Per action, the facts on the path of each offering rule that can fire.
    _offers: dict[str, list[list[Fact]]]
    # Actions removed by a top-level `suppress … when <always true>`, and where.
    _always_suppressed: dict[str, n.Span]

    if TYPE_CHECKING:  # provided by the checker class this is mixed into

        def warn(self, code: str, message: str, span: n.Span, hint: str | None = None) -> None: ...

    def walk_rules(self) -> None:
        """Warn on rules that can never fire or repeat others; note what each path offers."""
        self._reasoner = Reasoner({name: s.expr for name, s in self.out.segments.items()})
        self._reach(self.out.rules, [], {}, top=True)

    def _reach(
        self,
        rules: tuple[n.Rule, ...],
        path: list[_PathFact],
        seen: dict[tuple[Any, ...], n.WhenRule],
        top: bool,
    ) -> None:
        """Walk one block with the facts known on its path; warn on what can never happen."""
        seen = dict(seen)  # rules of an outer block shadow those of an inner one, not back
        for rule in rules:
            if isinstance(rule, n.IfBlock):
                if self._unreachable(rule, rule.condition, path, "this block"):
                    continue
                inner = [*path, _PathFact(Fact(rule.condition), rule.span)]
                self._reach(rule.then, inner, seen, top=False)
                if rule.orelse:
                    other = [*path, _PathFact(Fact(rule.condition, not_true=True), rule.span)]
                    if not self._reasoner.satisfiable([p.fact for p in other]):
                        first = rule.orelse[0]
                        self.warn("unreachable-rule", "this 'else' can never run", first.span)
                    else:
                        self._reach(rule.orelse, other, seen, top=False)
                continue
            what = "this rule" if isinstance(rule, n.WhenRule) else "this suppress rule"
            cond = rule.condition if isinstance(rule, n.WhenRule | n.SuppressRule) else None
            assert cond is not None
            if self._unreachable(rule, cond, path, what):
                continue
            if isinstance(rule, n.SuppressRule):
                if top and always_true(cond):
                    self._always_suppressed.setdefault(rule.action, rule.span)
                continue
            assert isinstance(rule, n.WhenRule)
            self._shadowed(rule, seen)
            facts = [p.fact for p in path] + [Fact(rule.condition)]
            self._offers.setdefault(rule.action, []).append(facts)

    def _unreachable(self, rule: n.Rule, cond: n.Expr, path: list[_PathFact], what: str) -> bool:
        own = Fact(cond)
        if self._reasoner.satisfiable([p.fact for p in path], [own]):
            return False  # the usual case: one test, whatever the depth
        if not path or not self._reasoner.satisfiable([], [own]):
            if always_true(n.Unary(cond.span, "not", cond)):
                why = "its condition is always false"
            else:
                why = "its conditions contradict each other"
            self.warn("unreachable-rule", f"{what} can never run: {why}", rule.span)
            return True
        # Name the innermost enclosing `if` that, with those inside it, rules the rule out.
        for j in range(len(path) - 1, -1, -1):
            if not self._reasoner.satisfiable([p.fact for p in path[j:]], [own]):
                kind = "the enclosing 'if'"
                if path[j].fact.not_true:
                    kind = "the 'if' whose 'else' it is in"
                message = (
                    f"{what} can never run: its condition contradicts {kind} at {path[j].span}"
                )
                self.warn("unreachable-rule", message, rule.span)
                return True
        return False  # pragma: no cover - the whole path contradicts, so some suffix does

    def _shadowed(self, rule: n.WhenRule, seen: dict[tuple[Any, ...], n.WhenRule]) -> None:
        """A `when` identical to an earlier one on its path adds nothing, unless it ranks higher."""
        key = (rule.condition, rule.action)
        earlier = seen.get(key)
        if earlier is None or (rule.priority, rule.weight) > (earlier.priority, earlier.weight):
            seen[key] = rule
            return
        self.warn(
            "shadowed-rule",
            f"same condition and action as the rule at {earlier.span}, which already fires",
            rule.span,
            hint="remove it, or give it a higher priority or weight",
        )

    def _offerable(self, action: n.ActionDecl) -> None:
        """Warn when every rule offering the action is blocked (suppressed, wrong channel, dead)."""
        name = action.name
        if name in self._always_suppressed:
            where = self._always_suppressed[name]
            self.warn(
                "unofferable-action",
                f"action '{name}' is always suppressed (by the rule at {where})",
                action.name_span,
            )
            return
        paths = self._offers.get(name, [])
        if not paths:
            message = f"no rule that offers action '{name}' can ever fire"
            self.warn("unofferable-action", message, action.name_span)
            return
        if action.channels and "channel" in self.out.context:
            channel = n.Ref(n.NO_SPAN, ("context", "channel"))
            items = tuple(n.String(n.NO_SPAN, c) for c in action.channels)
            wrong = n.Binary(n.NO_SPAN, "not in", channel, n.ListLit(n.NO_SPAN, items))
            # Arbitration drops an action whose channels exclude the request's channel.
            blocked = Fact(wrong, not_true=True)
            if not any(self._reasoner.satisfiable(p[:-1], [p[-1], blocked]) for p in paths):
                self.warn(
                    "unofferable-action",
                    f"action '{name}' is only for channels [{', '.join(action.channels)}], "
                    "but every rule that offers it requires another channel",
                    action.name_span,
                )
