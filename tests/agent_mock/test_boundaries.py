"""The simulator speaks only the wire protocol: no server code (DESIGN.md, layout)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import agent_mock

ALLOWED = {"aiohttp", "orjson", "uvloop", "agent_mock"} | set(sys.stdlib_module_names)


def test_agent_mock_imports_only_aiohttp_orjson_uvloop_and_the_standard_library():
    package = Path(agent_mock.__file__).parent
    found = {}
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(path.name)
    assert {"aiohttp", "orjson"} <= set(found)
    assert {name: files for name, files in found.items() if name not in ALLOWED} == {}
