"""Schemathesis hooks for Bursar's contract test (.ci/contract).

The built-in `positive_data_acceptance` check treats any 4xx other than
401/403/404/409/429 to a schema-valid request as a rejected valid request.
Bursar also refuses schema-valid requests for reasons no schema can state:
the state of the data (an archived plan, a period the plan does not sell, a
balance that does not cover the charge, a refund larger than what is left)
or a rule across fields (two prices for one period, a default that is not
one of the choices). This check is the built-in one, except that it accepts
exactly those refusals, recognised by their problem `type` (and, for
`invalid-field`, the field and the rule). A refusal of a field's own format
(a name too long, an unknown currency) is still a failure: the document
must state that limit.
"""

import ast
import threading

import schemathesis
from schemathesis.specs.openapi.checks import positive_data_acceptance

# CPython 3.11 keeps the AST constructor's recursion depth in interpreter
# state that every thread shares (see CPython gh-106905), so two threads in
# `ast.parse` at once can fail with "SystemError: AST constructor recursion
# depth mismatch". Hypothesis parses the source of its lambdas while describing
# them, and `--workers 2` runs two such threads: one parse at a time.
_ast_parse = ast.parse
_ast_parse_lock = threading.Lock()


def _serialized_ast_parse(*args, **kwargs):
    with _ast_parse_lock:
        return _ast_parse(*args, **kwargs)


ast.parse = _serialized_ast_parse

PREFIX = "urn:bursar:problem:"

# Refusals that depend on the data or the clock, whatever the request says.
STATE_KINDS = {
    "insufficient-funds",
    "plan-archived",
    "invalid-period",
    "plan-change-not-allowed",
    "not-an-unpaid-order",
    "amount-mismatch",
    "refund-exceeds-payment",
    "currency-mismatch",
    "sync-unsupported",
    "invalid-transaction",
}

# `invalid-field` refusals that depend on the data, the clock or the key.
STATE_FIELDS = {
    "account_id",  # staff must name the account; it must exist
    "expires_at",  # must be in the future
    "gateway",  # a configured gateway instance
    "module",  # a configured module instance
    "module_settings",  # what that module requires
    "change_to",  # plans that exist, on the same module and product type
    "plan_id",
    "service_id",
}

# `invalid-field` refusals of a rule across fields, by their wording.
CROSS_FIELD_RULES = (
    "two prices for",
    "two setup fees",
    "appears twice",
    "needs 0 ≤ min ≤ max",
    "repeats a choice",
    "is not a choice",
    "add-on",  # order add-ons are checked against the plan's
)


def _state_dependent(response):
    try:
        body = response.json()
    except Exception:
        return False
    if not isinstance(body, dict):
        return False
    kind = str(body.get("type", "")).removeprefix(PREFIX)
    if kind in STATE_KINDS:
        return True
    if kind == "invalid-field":
        if body.get("field") in STATE_FIELDS:
            return True
        detail = str(body.get("detail", ""))
        return body.get("field") in ("prices", "setup_fees", "addons") and any(
            rule in detail for rule in CROSS_FIELD_RULES
        )
    return False


@schemathesis.check
def bursar_positive_data_acceptance(ctx, response, case):
    """Schema-valid requests are accepted, or refused for the state of the data."""
    try:
        return positive_data_acceptance(ctx, response, case)
    except AssertionError:
        if _state_dependent(response):
            return None
        raise
