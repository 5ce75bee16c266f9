"""The checker's output, `CheckedRuleset`: a leaf module so the checks can share its type.

The checker (`dsl.checker`) builds one; the expression checks, rule-path warnings
and scenario checks read it while it is being built; the engine compiles it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from arbiter.dsl import nodes as n
from arbiter.dsl import types as t
from arbiter.dsl.errors import Diagnostic


@dataclass
class CheckedRuleset:
    """A ruleset whose names and types are known to be consistent."""

    name: str
    sources: dict[str, str]
    profile: dict[str, t.Type] = field(default_factory=dict)
    context: dict[str, t.Type] = field(default_factory=dict)
    events: dict[str, dict[str, t.Type]] = field(default_factory=dict)
    #: Custom action attributes (`action attributes { … }`) and their types.
    attributes: dict[str, t.Type] = field(default_factory=dict)
    segments: dict[str, n.SegmentDecl] = field(default_factory=dict)  # dependency order
    models: dict[str, n.ModelDecl] = field(default_factory=dict)
    actions: dict[str, n.ActionDecl] = field(default_factory=dict)
    rules: tuple[n.Rule, ...] = ()
    bandits: dict[str, n.BanditDecl] = field(default_factory=dict)
    arbitrate: n.ArbitrateDecl | None = None
    holdout: n.HoldoutDecl | None = None
    experiments: dict[str, n.ExperimentDecl] = field(default_factory=dict)
    default: str | None = None
    #: The contact policy's limits, across all offers (`contact policy { … }`).
    policies: tuple[n.PolicyLimit, ...] = ()
    #: Fatigue across offers, per channel or tag (`… suppress after N rejections …`).
    fatigue_policies: tuple[n.PolicyFatigue, ...] = ()
    triggers: dict[str, n.TriggerDecl] = field(default_factory=dict)
    scenarios: tuple[n.ScenarioDecl, ...] = ()
    warnings: list[Diagnostic] = field(default_factory=list)
