"""The wire's subjects: spelled in ``domain.subjects`` only, and each builder read back by
its parser."""

from __future__ import annotations

import ast
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from gatehook.domain import subjects

SRC = Path(__file__).resolve().parents[2] / "src" / "gatehook"
token = st.from_regex(r"[a-z0-9_-]{1,20}", fullmatch=True)


def _spelled(path: Path) -> list[int]:
    """Lines of ``path`` where code spells a gatehook subject: not a docstring, comment or
    a schema field's description (documentation for people)."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    docstrings |= {
        id(part)
        for node in ast.walk(tree)
        if isinstance(node, ast.keyword) and node.arg == "description"
        for part in ast.walk(node.value)
    }
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and "gatehook.v1" in node.value
        and id(node) not in docstrings
    ]


def test_no_module_but_the_subjects_module_spells_a_subject() -> None:
    found = {
        str(path.relative_to(SRC)): lines
        for path in SRC.rglob("*.py")
        if "node_modules" not in path.parts and path.name != "subjects.py"
        for lines in [_spelled(path)]
        if lines
    }
    assert found == {}


@given(token, token, token)
def test_a_trigger_subject_reads_back_as_its_parts(tenant: str, ft: str, tr: str) -> None:
    assert subjects.trigger_parts(subjects.trigger(tenant, ft, tr)) == (tenant, ft, tr)
    assert subjects.trigger_parts("gatehook.v1.trigger.acme.only") is None


@given(token, token, token)
def test_an_admin_subject_reads_back_with_its_principal(
    principal: str, tenant: str, op: str
) -> None:
    plain = subjects.admin(tenant, op)
    assert subjects.admin_parts(plain) == (None, plain.split("."))
    assert subjects.admin_parts(subjects.as_admin(principal, tenant, op)) == (
        principal,
        plain.split("."),
    )


@given(token, token)
def test_an_ingress_subject_reads_back(tenant: str, op: str) -> None:
    assert subjects.ingress_parts(subjects.ingress(tenant, op)) == (tenant, op)


def test_the_forms_are_what_the_builders_make() -> None:
    filled = {"tenant": "t", "flow_type": "f", "trigger": "g", "operation": "o", "event": "e"}
    assert subjects.TRIGGER_FORM.format(**filled) == subjects.trigger("t", "f", "g")
    assert subjects.ADMIN_FORM.format(**filled) == subjects.admin("t", "o")
    assert subjects.INGRESS_FORM.format(**filled) == subjects.ingress("t", "o")
    assert subjects.CHANGES_FORM.format(**filled) == subjects.changes("t")
    assert subjects.AUDIT_FORM.format(**filled) == subjects.audit("t", "e")
    assert subjects.DECIDED_FORM.format(**filled) == subjects.decided("t")
    assert subjects.said(subjects.INGRESS_FORM) == "gatehook.v1.ingress.<tenant>.<operation>"
    assert subjects.audit_filter(None, None) == subjects.AUDIT_PREFIX + "*.>"
    assert subjects.lane_audit_prefix(0, 1) == subjects.AUDIT_PREFIX
    assert subjects.lane_audit_prefix(2, 3) == "gatehook.v1.lane.2.audit."
