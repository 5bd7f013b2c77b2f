"""Close and error codes are declared once (signaling/codes.py), and every taker agrees with it:
the hub's errors, the Python peer client and the browser client."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import signaling
from media import errors as client_errors
from signaling import errors
from signaling.codes import FATAL_CLOSES, Close, ErrorCode

PACKAGE = Path(signaling.__file__).parent
SOURCES = [f for f in PACKAGE.rglob("*.py") if f.name != "codes.py" and "testing" not in f.parts]
CONNVO_JS = PACKAGE / "static" / "connvo.js"


def _calls(tree: ast.AST) -> list[ast.Call]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)]


@pytest.mark.parametrize("path", SOURCES, ids=lambda f: f.name)
def test_no_module_spells_an_error_code_or_close_code_itself(path: Path) -> None:
    """Codes were declared in six places (protocol.py, bare numbers in errors.py and others);
    now a literal code anywhere but codes.py is a drift waiting to happen."""
    tree = ast.parse(path.read_text())
    for call in _calls(tree):
        for kw in call.keywords:
            if kw.arg == "code" and isinstance(kw.value, (ast.Constant, ast.JoinedStr)):
                pytest.fail(f"{path.name}:{call.lineno}: code={ast.unparse(kw.value)}")
        name = ast.unparse(call.func)
        if name.endswith(("close", "close_soon", "close_peers", "close_local")):
            for arg in call.args:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, int):
                    pytest.fail(f"{path.name}:{call.lineno}: close code {arg.value}")
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = {ast.unparse(t) for t in targets}
            if names & {"code", "close_code"} and isinstance(node.value, ast.Constant) \
                    and node.value.value not in (None, 0):  # 0: "no code" (bus envelope)
                pytest.fail(f"{path.name}:{node.lineno}: {names} = {node.value.value!r}")


@pytest.mark.parametrize("path", SOURCES, ids=lambda f: f.name)
def test_no_bare_hub_error_is_raised(path: Path) -> None:
    """A bare HubError reports HTTP 500 (a bug) for what is a client's mistake or the room's
    state: 'peer-unavailable' and 'feature-disabled' were raised that way."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
            assert ast.unparse(node.exc.func) != "HubError", f"{path.name}:{node.lineno}"


def test_every_error_class_has_a_declared_code_and_a_client_status() -> None:
    classes = [c for c in vars(errors).values()
               if isinstance(c, type) and issubclass(c, errors.HubError) and c is not errors.HubError]
    assert classes
    for cls in classes:
        assert cls.code in set(ErrorCode), cls
        assert cls.http_status < 500 or cls is errors.Unavailable, cls
        assert cls.close_code is None or cls.close_code in set(Close), cls


def test_connvo_js_fatal_close_table_matches_codes_py() -> None:
    """connvo.js keeps its own table (no build step); this test is what keeps the two equal."""
    source = CONNVO_JS.read_text()
    body = re.search(r"const FATAL_CLOSE = \{(.*?)\};", source, re.DOTALL)
    assert body is not None, "FATAL_CLOSE table not found in connvo.js"
    table = {int(code): name for code, name in re.findall(r"(\d+):\s*'([a-z-]+)'", body.group(1))}
    assert table == {int(code): str(name) for code, name in FATAL_CLOSES.items()}


def test_python_client_treats_every_fatal_close_as_final() -> None:
    for code in FATAL_CLOSES:
        err = client_errors.error_for_close(code)
        assert not isinstance(err, client_errors.HubUnreachableError), code
        assert code not in client_errors.RESUMABLE_CLOSE_CODES, code


def test_taken_over_is_its_own_close_and_not_retried() -> None:
    """A seat resumed elsewhere used to be closed with 4409, which both clients read as 'room
    full' (the Python client even retried it)."""
    assert Close.TAKEN_OVER not in (Close.ROOM_FULL, Close.FORBIDDEN)
    err = client_errors.error_for_close(Close.TAKEN_OVER, "resumed elsewhere")
    assert isinstance(err, client_errors.TakenOverError)
    assert err.code == "taken-over" and not err.retryable
