"""Code generation: checked ruleset → `Plan`, a generated Python evaluator with prepared tables."""
