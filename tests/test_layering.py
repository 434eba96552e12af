"""DESIGN §2: no module imports from a layer above its own (engines of one layer may use each other, as
`diff` uses `tree`), and only the CLI touches the environment, the terminal and the current directory."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "dsvc"

LAYERS: dict[str, int] = {
    "errors": 0,
    "hashing": 0,
    "atomic": 0,
    "gcpause": 0,
    "codec": 1,
    "objects": 1,
    "model": 1,
    "store": 2,
    "refs": 2,
    "config": 2,
    "lock": 2,
    "tree": 3,
    "tree_diff": 3,
    "history": 3,
    "diff": 3,
    "workdir": 3,
    "formats": 3,
    "metrics": 3,
    "remote": 3,
    "fsck": 3,
    "dataset": 3,
    "repo": 4,
    "repo_diff": 4,
    "repo_metrics": 4,
    "repo_remote": 4,
    "cli": 4,
    "__init__": 4,
    "__main__": 4,
}
ENVIRONMENT_CALLS = {
    "os.environ",
    "os.getenv",
    "os.getcwd",
    "Path.cwd",
    "sys.stdin",
    "sys.stdout",
    "sys.stderr",
}


def _module_name(path: Path) -> str:
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def _imports(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dsvc"):
            parts = node.module.split(".")
            if len(parts) == 1:
                found += [alias.name for alias in node.names]
            else:
                found.append(parts[1])
        elif isinstance(node, ast.Import):
            found += [a.name.split(".")[1] for a in node.names if a.name.startswith("dsvc.")]
    return found


def test_every_module_has_a_layer() -> None:
    missing = {_module_name(p) for p in PACKAGE.rglob("*.py")} - set(LAYERS)
    assert not missing, f"give these modules a layer in DESIGN §2 and here: {missing}"


def test_modules_import_only_from_lower_layers() -> None:
    problems = []
    for path in PACKAGE.rglob("*.py"):
        name = _module_name(path)
        if name in ("__init__", "__main__"):
            continue
        for imported in _imports(ast.parse(path.read_text())):
            if LAYERS[imported] > LAYERS[name]:
                problems.append(
                    f"{path.relative_to(PACKAGE)} (L{LAYERS[name]}) imports {imported} (L{LAYERS[imported]})"
                )
    assert not problems, "\n".join(problems)


def test_only_the_cli_reads_the_environment_terminal_or_cwd() -> None:
    problems = []
    for path in PACKAGE.rglob("*.py"):
        if _module_name(path) == "cli":
            continue
        source = path.read_text()
        problems += [
            f"{path.relative_to(PACKAGE)} uses {call}" for call in ENVIRONMENT_CALLS if call in source
        ]
    assert not problems, problems


def test_modules_stay_small() -> None:
    long = [
        f"{p.relative_to(PACKAGE)}: {n} lines"
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 600
    ]
    assert not long, long
