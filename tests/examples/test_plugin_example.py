"""Testing rules with Arbiter's pytest plugin (docs/testing.md shows this file; it runs in CI).

The fixtures come from the plugin that installing Arbiter registers: no import
of Arbiter, no conftest. Paths are relative to the project's root.
"""

import pytest

RETAIL = "rulesets/retail.rules"
EMAIL = {"channel": "email"}


def test_cart_abandoner_with_consent_gets_the_recovery_email(arbiter_ruleset):
    retail = arbiter_ruleset(RETAIL)
    profile = retail.profile(visits_30d=6, orders_90d=1, consents=["email"])
    cart = [retail.event("add_to_cart", "3h", price=30.0), retail.event("page_view", "2h")]
    retail.assert_decides(["cart_recovery_email"], profile, EMAIL, events=cart)


def test_no_recovery_email_without_consent(arbiter_ruleset):
    retail = arbiter_ruleset(RETAIL)
    profile = retail.profile(visits_30d=6, orders_90d=1, consents=[])
    cart = [retail.event("add_to_cart", "3h", price=30.0)]
    assert retail.actions(profile, EMAIL, events=cart) == ["personal_recs"]


def test_a_misspelt_attribute_is_an_error_not_a_silent_miss(arbiter_ruleset):
    retail = arbiter_ruleset(RETAIL)
    with pytest.raises(ValueError, match="did you mean 'visits_30d'"):
        retail.profile(visit_30d=6)


def test_a_wrong_expectation_fails_with_the_rules_that_fired(arbiter_ruleset):
    retail = arbiter_ruleset(RETAIL)
    profile = retail.profile(visits_30d=6, orders_90d=1, consents=["email"])
    cart = [retail.event("add_to_cart", "3h", price=30.0)]
    with pytest.raises(AssertionError) as failure:
        retail.assert_decides(["winback_email"], profile, EMAIL, events=cart)
    message = str(failure.value)
    assert "expected ['winback_email'], got ['cart_recovery_email']" in message
    assert "when cart_abandoner offer cart_recovery_email weight 2" in message


def test_logged_traffic_decides_the_same(arbiter_replay):
    # A log written by these rules: every decision must come out the same.
    replayed = arbiter_replay(
        "tests/cases/records/v1.jsonl", rules="tests/cases/records/retail_v1.rules"
    )
    replayed.assert_no_decision_changes()
    assert replayed.report.total == 40
