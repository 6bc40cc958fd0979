"""Deliberately broken copies of the accounts service's steps (examples/testing-upcasters).

Each :class:`Breakage` is one plausible bug a developer might write, as one
edit of ``upcasters/__init__.py``: the text it replaces and what replaces it.
``tests/test_broken_upcasters.py`` applies each to a copy of the example and
asserts that ``eventmig check``, the library call and the example's own
pytest suite all catch it, and that the unbroken copy raises no false alarm.
"""

from __future__ import annotations

import shutil
import textwrap
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "testing-upcasters"


@dataclass(frozen=True)
class Breakage:
    id: str
    #: the kind of bug
    kind: str
    old: str
    new: str
    #: the properties that must catch it (others may too)
    caught_by: frozenset[str] = frozenset()


def _block(text: str) -> str:
    return textwrap.dedent(text).strip("\n")


def _body(text: str) -> str:
    """Lines of a function body: dedented, then indented once."""
    return textwrap.indent(_block(text), "    ")


OPENED = 'registry.fields("AccountOpened", 1, rename={"owner": "holder"}, defaults={"currency": "EUR"})'
DEPOSIT = "MoneyDeposited(e.account_id, euros_to_cents(e.amount), e.reference)"
RENAMED = 'registry.rename_type("Withdrawal", 1, "MoneyWithdrawn")'
SPLIT = _body("""
    return [
        BalancePaidOut(e.account_id, e.final_balance_cents),
        AccountClosed(e.account_id, e.reason, e.closed_at),
    ]
""")
# the declarations a careful developer writes with a hand-written step (they change nothing it does)
OPENED_DECLARED = 'rename={"owner": "holder"}, defaults={"currency": "EUR"}'

BREAKAGES = [
    # ---------------------------------------------------------------- wrong values
    Breakage("wrong-default", "wrong default for a new field",
             OPENED, OPENED.replace('"EUR"', '"USD"'),
             caught_by=frozenset({"example"})),
    Breakage("rename-keeps-old-key", "a rename that keeps the old key", OPENED, _block(f"""
        @registry.upcaster("AccountOpened", 1, to=("AccountOpened", 2), {OPENED_DECLARED})
        def owner_is_holder(d):
            return {{**d, "holder": d["owner"], "currency": "EUR"}}
    """),
             caught_by=frozenset({"reaches heads"})),
    Breakage("rename-reads-wrong-field", "a value lost by reading the wrong field", OPENED, _block(f"""
        @registry.upcaster(rename={{"owner": "holder"}})
        def owner_is_holder(e: AccountOpenedV1) -> AccountOpened:
            return AccountOpened(e.account_id, e.account_id, e.opened_at)
    """),
             caught_by=frozenset({"unchanged"})),
    Breakage("deposit-reads-wrong-field", "a value lost by reading the wrong field",
             DEPOSIT, "MoneyDeposited(e.account_id, euros_to_cents(e.amount), e.account_id)",
             caught_by=frozenset({"unchanged"})),
    Breakage("deposit-strips-reference", "a field changed without saying so",
             DEPOSIT, "MoneyDeposited(e.account_id, euros_to_cents(e.amount), e.reference.strip())",
             caught_by=frozenset({"unchanged"})),
    Breakage("deposit-drops-non-ascii", "a field changed without saying so",
             DEPOSIT, 'MoneyDeposited(e.account_id, euros_to_cents(e.amount), e.reference.encode("ascii", "ignore").decode())',
             caught_by=frozenset({"unchanged"})),
    Breakage("withdrawal-truncates-reference", "a field changed without saying so", RENAMED, _block("""
        @registry.upcaster("Withdrawal", 1, to=("MoneyWithdrawn", 1))
        def withdrawal_renamed(d):
            return {**d, "reference": d["reference"][:20]}
    """),
             caught_by=frozenset({"unchanged"})),
    # ---------------------------------------------------------- narrowing: float to int
    Breakage("step-truncates-cents", "float-to-int truncation",
             DEPOSIT, "MoneyDeposited(e.account_id, int(e.amount * 100), e.reference)",
             caught_by=frozenset({"rule", "example"})),
    Breakage("rule-truncates-cents", "float-to-int truncation",
             "return round(euros * 100)", "return int(euros * 100)",
             caught_by=frozenset({"example"})),
    Breakage("step-rounds-half-up", "float-to-int with another rounding than declared",
             DEPOSIT, "MoneyDeposited(e.account_id, int(e.amount * 100 + 0.5), e.reference)",
             caught_by=frozenset({"rule"})),
    Breakage("rule-rounds-euros", "float-to-int truncation",
             "return round(euros * 100)", "return round(euros) * 100",
             caught_by=frozenset({"example"})),
    Breakage("rule-wrong-scale", "float-to-int with a wrong unit",
             "return round(euros * 100)", "return round(euros * 10)",
             caught_by=frozenset({"example"})),
    # ------------------------------------------------------------------------ renames
    Breakage("rename-type-typo", "a typo in a rename_type target",
             RENAMED, RENAMED.replace("MoneyWithdrawn", "MoneyWithdrawl"),
             caught_by=frozenset({"schemas", "example"})),
    Breakage("rename-type-wrong-target", "a rename_type into the wrong type",
             RENAMED, 'registry.rename_type("Withdrawal", 1, "MoneyDeposited", 2)',
             caught_by=frozenset({"example"})),
    Breakage("drop-instead-of-rename", "an event dropped that should live on",
             RENAMED, 'registry.drop("Withdrawal", 1)',
             caught_by=frozenset({"example"})),
    # -------------------------------------------------------------------------- splits
    Breakage("split-loses-event", "a split losing a declared event",
             SPLIT, SPLIT.replace("        BalancePaidOut(e.account_id, e.final_balance_cents),\n", ""),
             caught_by=frozenset({"targets", "example"})),
    Breakage("split-skips-zero-balance", "a split losing a declared event", SPLIT, _body("""
        payout = [BalancePaidOut(e.account_id, e.final_balance_cents)] if e.final_balance_cents else []
        return [*payout, AccountClosed(e.account_id, e.reason, e.closed_at)]
    """),
             caught_by=frozenset({"targets", "example"})),
    Breakage("split-out-of-order", "a split emitting out of order", SPLIT, _body("""
        return [
            AccountClosed(e.account_id, e.reason, e.closed_at),
            BalancePaidOut(e.account_id, e.final_balance_cents),
        ]
    """),
             caught_by=frozenset({"targets", "example"})),
    Breakage("split-wrong-field", "a split filling one event from the wrong field",
             SPLIT, SPLIT.replace("AccountClosed(e.account_id, e.reason, e.closed_at)",
                                  "AccountClosed(e.account_id, e.closed_at, e.reason)"),
             caught_by=frozenset({"unchanged", "example"})),
    Breakage("split-emits-twice", "a split emitting a declared event twice",
             SPLIT, SPLIT.replace("        AccountClosed(", "        BalancePaidOut(e.account_id, e.final_balance_cents),\n"
                                  "        AccountClosed("),
             caught_by=frozenset({"targets", "example"})),
    # ------------------------------------------- crashes and invalid heads (caught before)
    Breakage("rename-to-wrong-key", "a rename to a key the head does not have",
             OPENED, OPENED.replace('"holder"', '"holders"'),
             caught_by=frozenset({"reaches heads"})),
    Breakage("removes-required-field", "a step removing a field the head requires",
             OPENED, OPENED.replace(")", ', remove=["opened_at"])'),
             caught_by=frozenset({"reaches heads"})),
    Breakage("crashes-on-empty-reference", "a step crashing on an empty string",
             DEPOSIT, "MoneyDeposited(e.account_id, euros_to_cents(e.amount), e.reference[0] + e.reference[1:])",
             caught_by=frozenset({"upcasts"})),
]


def broken_copy(root: Path, breakage: Breakage | None, *, examples: int | None = None) -> Path:
    """A copy of the example service under ``root`` with ``breakage`` applied (None: unbroken),
    checking ``examples`` generated events per schema if given (``check_examples``)."""
    copy = root / "accounts"
    shutil.copytree(EXAMPLE, copy, ignore=shutil.ignore_patterns("__pycache__", "*.db", ".hypothesis"))
    if examples is not None:
        pyproject = copy / "pyproject.toml"
        text = pyproject.read_text()
        pyproject.write_text(text.replace("[tool.eventmig]\n", f"[tool.eventmig]\ncheck_examples = {examples}\n"))
    if breakage is not None:
        module = copy / "upcasters" / "__init__.py"
        text = module.read_text()
        assert text.count(breakage.old) == 1, f"{breakage.id}: {breakage.old!r} is not once in the example"
        module.write_text(text.replace(breakage.old, breakage.new))
    return copy
