"""The sandbox's test institutions and the accounts each one offers.

They follow Stripe's test-mode institutions: success banks with OAuth and
credentials logins, Ownership Accounts, Invalid Payment Accounts, three Down banks, and
the deactivation banks. Every institution carries what the modal shows (name, featured
flag, logo colour and initials, login style, status).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ACH = ("us_bank_account",)
ACH_LINK = ("link", "us_bank_account")


@dataclass(frozen=True)
class AccountTemplate:
    """One account an institution offers in the account picker."""

    key: str
    display_name: str
    last4: str
    category: str = "cash"
    subcategory: str = "checking"
    supported_payment_method_types: tuple[str, ...] = ACH_LINK
    disabled_reason: str | None = None
    owners: str = "single"

    def as_dict(self, *, disabled_reason: str | None = None) -> dict[str, Any]:
        reason = self.disabled_reason or disabled_reason
        return {
            "key": self.key,
            "display_name": self.display_name,
            "last4": self.last4,
            "category": self.category,
            "subcategory": self.subcategory,
            "supported_payment_method_types": list(self.supported_payment_method_types),
            "selectable": reason is None,
            "disabled_reason": reason,
        }


@dataclass(frozen=True)
class Institution:
    """A test bank: what the modal shows and how linking and its accounts behave."""

    id: str
    name: str
    color: str
    initials: str
    auth: str = "credentials"
    featured: bool = False
    status: str = "up"
    status_message: str | None = None
    deactivation: str | None = None
    description: str = ""  # what this test bank simulates, in a few words
    accounts: tuple[AccountTemplate, ...] = field(default_factory=tuple)

    def template(self, key: str) -> AccountTemplate | None:
        return next((t for t in self.accounts if t.key == key), None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "featured": self.featured,
            "logo": {"color": self.color, "initials": self.initials},
            "auth": self.auth,
            "status": self.status,
            "status_message": self.status_message,
            "description": self.description,
        }


def _standard(prefix: str) -> tuple[AccountTemplate, ...]:
    """The Bank institutions' checking, savings and credit card, named after the bank."""
    return (
        AccountTemplate("checking", f"{prefix} Checking Account", "6789"),
        AccountTemplate("savings", f"{prefix} Savings Account", "4321", subcategory="savings"),
        AccountTemplate(
            "credit_card",
            f"{prefix} Credit Card",
            "1234",
            category="credit",
            subcategory="credit_card",
            supported_payment_method_types=(),
        ),
    )


def _basic(prefix: str) -> tuple[AccountTemplate, ...]:
    """A checking and a savings account, named after the bank that offers them."""
    return (
        AccountTemplate("checking", f"{prefix} Checking", "6789"),
        AccountTemplate("savings", f"{prefix} Savings", "4321", subcategory="savings"),
    )


def _down(prefix: str) -> tuple[AccountTemplate, ...]:
    """The one account a down bank would offer, were it up."""
    return (AccountTemplate("checking", f"{prefix} Checking", "1111"),)


# Each bank names its accounts its own way, so two linked test banks never show two
# accounts of the same name; the plain login banks keep Stripe's sample names.
INSTITUTIONS: tuple[Institution, ...] = (
    Institution(
        "bank_oauth",
        "Bank (OAuth)",
        "#635bff",
        "BO",
        auth="oauth",
        featured=True,
        accounts=_standard("Sample OAuth"),
        description="Log in at the bank and choose the accounts to share",
    ),
    Institution(
        "bank_nonoauth",
        "Bank (Non-OAuth)",
        "#0a2540",
        "BN",
        featured=True,
        accounts=_standard("Sample"),
        description="Login form: any details; mfa or error in the password",
    ),
    Institution(
        "test_oauth",
        "Test (OAuth)",
        "#00a86b",
        "TO",
        auth="oauth",
        featured=True,
        accounts=_basic("Test OAuth"),
        description="Checking and savings, OAuth login",
    ),
    Institution(
        "test_nonoauth",
        "Test (Non-OAuth)",
        "#2e7d32",
        "TN",
        featured=True,
        accounts=_basic("Test"),
        description="Checking and savings, any username and password",
    ),
    Institution(
        "ownership",
        "Ownership Accounts",
        "#8e24aa",
        "OA",
        accounts=(
            AccountTemplate("single_owner", "Single Owner Checking", "1001", owners="single"),
            AccountTemplate("joint", "Joint Checking", "1002", owners="joint"),
            AccountTemplate("business", "Business Checking", "1003", owners="business"),
            AccountTemplate(
                "partial", "Partial Owner Details", "1004", subcategory="savings", owners="partial"
            ),
            AccountTemplate("no_owners", "No Ownership Data", "1005", owners="none"),
        ),
        description="Joint, business and partial owners",
    ),
    Institution(
        "invalid_payment",
        "Invalid Payment Accounts",
        "#c62828",
        "IP",
        accounts=(
            AccountTemplate(
                "credit_card",
                "Rewards Credit Card",
                "2001",
                category="credit",
                subcategory="credit_card",
                supported_payment_method_types=(),
            ),
            AccountTemplate(
                "mortgage",
                "Home Mortgage",
                "2002",
                category="credit",
                subcategory="mortgage",
                supported_payment_method_types=(),
            ),
            AccountTemplate(
                "line_of_credit",
                "Personal Line of Credit",
                "2003",
                category="credit",
                subcategory="line_of_credit",
                supported_payment_method_types=(),
            ),
            AccountTemplate(
                "investment",
                "Brokerage Account",
                "2004",
                category="investment",
                subcategory="other",
                supported_payment_method_types=(),
            ),
        ),
        description="Credit, loan and brokerage accounts: no ACH",
    ),
    Institution(
        "down_scheduled",
        "Down (Scheduled)",
        "#757575",
        "DS",
        status="down_scheduled",
        status_message="This bank is down for scheduled maintenance. Try again later.",
        accounts=_down("Down Scheduled"),
        description="Login fails: down for scheduled maintenance",
    ),
    Institution(
        "down_unscheduled",
        "Down (Unscheduled)",
        "#616161",
        "DU",
        status="down_unscheduled",
        status_message="This bank is unavailable right now. Try again later.",
        accounts=_down("Down Unscheduled"),
        description="Login fails: down without notice",
    ),
    Institution(
        "down_error",
        "Down (Error)",
        "#424242",
        "DE",
        status="down_error",
        status_message="Something went wrong connecting to this bank.",
        accounts=_down("Down Error"),
        description="Login fails: unknown error at the bank",
    ),
    Institution(
        "inactive",
        "Inactive Accounts",
        "#ef6c00",
        "IA",
        deactivation="inactive",
        accounts=_basic("Inactive"),
        description="Accounts go inactive after linking: reconnect",
    ),
    Institution(
        "reauth_immediate",
        "Immediately Requires Reauthentication",
        "#f9a825",
        "IR",
        auth="oauth",
        deactivation="reauth_immediate",
        accounts=_basic("Reauth Now"),
        description="Needs reauthentication right after linking",
    ),
    Institution(
        "reauth_eventual",
        "Eventually Requires Reauthentication",
        "#fbc02d",
        "ER",
        auth="oauth",
        deactivation="reauth_eventual",
        accounts=_basic("Reauth Later"),
        description="Needs reauthentication 30 days after linking",
    ),
)

_BY_ID = {i.id: i for i in INSTITUTIONS}


def get(institution_id: str) -> Institution | None:
    """The institution with this id, or None."""
    return _BY_ID.get(institution_id)


def search(query: str | None = None) -> list[Institution]:
    """Institutions whose name or id contains ``query`` (all of them, featured first, for None)."""
    found = list(INSTITUTIONS)
    if query:
        q = query.strip().lower()
        found = [i for i in found if q in i.name.lower() or q in i.id]
    return sorted(found, key=lambda i: not i.featured)
