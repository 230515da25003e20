"""docs/ cannot drift from the code: the generated pages equal what the code generates, every
environment variable the code reads is in config/settings.py's VARIABLES with the code's
default, and nothing in the repository points at files outside it."""

from __future__ import annotations

import ast
import operator
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from config.settings import VARIABLES
from notifier.cli import main
from notifier.docs import DOCS_DIR, PAGES

ROOT = Path(__file__).resolve().parents[2]
PRODUCT_CODE = [
    *sorted((ROOT / "notifier").rglob("*.py")),
    *sorted((ROOT / "channels").glob("*.py")),
    *sorted((ROOT / "config").glob("*.py")),
    *sorted((ROOT / "tasks").glob("*.py")),
    ROOT / "worker.py",
    ROOT / "beat_schedule.py",
]
DECLARED = {variable.name: variable for variable in VARIABLES}
# Functions whose first argument is the name of an environment variable.
READERS = {"get", "getenv", "_env", "_int", "_float", "_flag", "_offsets", "_hour", "_hosts"}
VARIABLE_NAME = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+")


@pytest.mark.parametrize("page", sorted(PAGES))
def test_generated_page_matches_the_code(page: str) -> None:
    path = DOCS_DIR / f"{page}.md"
    assert path.read_text(encoding="utf-8") == PAGES[page](), (
        f"docs/{page}.md is out of date: run `notifier docs {page} --output docs/{page}.md`"
    )


@pytest.mark.parametrize("page", sorted(PAGES))
def test_docs_command_prints_the_page(page: str) -> None:
    result = CliRunner().invoke(main, ["docs", page])
    assert result.exit_code == 0, result.output
    assert result.output == PAGES[page]()


def test_docs_command_writes_the_page(tmp_path: Path) -> None:
    target = tmp_path / "configuration.md"
    result = CliRunner().invoke(main, ["docs", "configuration", "--output", str(target)])
    assert result.exit_code == 0, result.output
    assert target.read_text(encoding="utf-8") == PAGES["configuration"]()


_OPERATORS = {ast.Mult: operator.mul, ast.Add: operator.add, ast.Pow: operator.pow}


def _constant(node: ast.expr) -> object:
    """The value of a constant expression (`"x"`, `25`, `256 * 1024`), else None."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        left, right = _constant(node.left), _constant(node.right)
        if isinstance(left, int) and isinstance(right, int):
            return _OPERATORS[type(node.op)](left, right)
    return None


def _reader_name(call: ast.Call) -> str | None:
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    if name not in READERS or not call.args:
        return None
    first = call.args[0]
    if isinstance(first, ast.Constant) and isinstance(first.value, str):
        return first.value if VARIABLE_NAME.fullmatch(first.value) else None
    return None


def _reads() -> dict[str, list[tuple[str, object]]]:
    """Every environment variable read by literal name in the product code, with the
    defaults the code gives it there: a reader's second argument, or the constant after
    `or` (`os.environ.get("X", "").strip() or "fallback"`)."""
    reads: dict[str, list[tuple[str, object]]] = {}
    for path in PRODUCT_CODE:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        where = str(path.relative_to(ROOT))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and (name := _reader_name(node)):
                default = _constant(node.args[1]) if len(node.args) > 1 else None
                reads.setdefault(name, []).append((where, default))
            if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.Or):
                fallback = _constant(node.values[-1])
                for call in ast.walk(node.values[0]):
                    if isinstance(call, ast.Call) and (name := _reader_name(call)):
                        reads.setdefault(name, []).append((where, fallback))
    return reads


def _families() -> set[str]:
    """Prefixes of the variables read by a computed name (f"NOTIFIER_RATE_{...}")."""
    prefixes = set()
    for path in PRODUCT_CODE:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.JoinedStr) and isinstance(node.values[0], ast.Constant):
                head = str(node.values[0].value)
                if re.fullmatch(r"[A-Z][A-Z0-9_]*_", head) and len(node.values) > 1:
                    prefixes.add(head)
    return prefixes


def test_every_variable_the_code_reads_is_documented() -> None:
    missing = sorted(set(_reads()) - set(DECLARED))
    assert not missing, (
        f"read but not in config/settings.py VARIABLES: {missing}; declare them there, then "
        "run `notifier docs configuration --output docs/configuration.md`"
    )


def test_every_computed_variable_name_is_documented() -> None:
    families = _families()
    assert "NOTIFIER_RATE_" in families  # the scan sees the computed names
    for prefix in families:
        if prefix.startswith(("NOTIFIER_", "LINE_", "SMTP_", "AWS_", "VAPID_", "SNS_")):
            assert any(name.startswith(prefix) for name in DECLARED), prefix


def test_every_documented_variable_is_read() -> None:
    reads, families = set(_reads()), _families()
    unread = [
        v.name
        for v in VARIABLES
        if not v.read_by_library
        and v.name not in reads
        and not any(v.name.startswith(prefix) for prefix in families)
    ]
    assert not unread, f"documented in config/settings.py VARIABLES but never read: {unread}"


def _same(documented: str, in_code: object) -> bool:
    if isinstance(in_code, bool) or in_code is None:
        return True  # flags, and reads whose default the scan cannot see
    if isinstance(in_code, int | float):
        return documented != "" and float(documented) == float(in_code)
    return documented == str(in_code)


# A second default the variable's meaning states (the command line logs less by default).
SECOND_DEFAULTS = {("NOTIFIER_LOG_LEVEL", "notifier/cli.py"): "WARNING"}


def test_documented_defaults_are_the_code_defaults() -> None:
    wrong = [
        f"{name}: documented {DECLARED[name].default!r}, {where} uses {default!r}"
        for name, uses in _reads().items()
        for where, default in uses
        if name in DECLARED
        and default not in ("", None)
        and not _same(DECLARED[name].default, default)
        and SECOND_DEFAULTS.get((name, where)) != default
    ]
    assert not wrong, wrong
    for (name, _), default in SECOND_DEFAULTS.items():
        assert default in DECLARED[name].meaning


def test_the_scan_sees_the_defaults() -> None:
    """A guard for the test above: it would pass vacuously if the scan found no defaults."""
    uses = _reads()
    assert ("config/settings.py", 100) in uses["NOTIFIER_SEND_CHUNK_SIZE"]
    assert ("config/settings.py", 256 * 1024) in uses["NOTIFIER_MAX_PAYLOAD_BYTES"]
    assert ("channels/sms.py", "KyoGym") in uses["SNS_SMS_SENDER_ID"]
    assert ("channels/email.py", "localhost") in uses["SMTP_HOST"]


def test_variables_are_declared_once_with_a_meaning() -> None:
    names = [variable.name for variable in VARIABLES]
    assert len(names) == len(set(names))
    assert all(variable.meaning.strip() for variable in VARIABLES)


def test_nothing_refers_to_files_outside_the_repository() -> None:
    outside = re.compile(r"\b(?:DESIGN|PROVIDERS)\.md\b")
    files = [
        path
        for path in ROOT.rglob("*")
        if path.is_file()
        and path.suffix in {".py", ".md", ".j2", ".toml", ".yml", ".yaml", ".html", ".cfg"}
        and not any(
            part.startswith(".") or part.endswith(".egg-info")
            for part in path.relative_to(ROOT).parts
        )
        and path != Path(__file__)
    ]
    assert len(files) > 50
    offenders = [str(p.relative_to(ROOT)) for p in files if outside.search(p.read_text("utf-8"))]
    assert not offenders, offenders


def test_readme_links_every_doc() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for page in sorted(DOCS_DIR.glob("*.md")):
        assert f"docs/{page.name}" in readme, page.name
