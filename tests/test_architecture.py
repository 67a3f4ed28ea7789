"""The package's shape: imports point one way (no cycle), and every shipped config loads and validates."""
import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "w2s_jax"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports (at any depth of its code: lazy imports count too)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            edges |= {t for t in targets if t in modules and t != name}
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(n):
        state[n] = "open"
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == "open":
                return stack[stack.index(m):] + [m]
            if m not in state and (cycle := visit(m)):
                return cycle
        stack.pop()
        state[n] = "done"
        return None

    for n in sorted(graph):
        if n not in state and (cycle := visit(n)):
            return cycle
    return None


def test_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_package_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle)


LAYERS = {"models": 0, "data": 0, "train": 1, "eval": 1, "objectives": 2, "experiments": 3}


def test_imports_point_down():
    """main -> experiments -> objectives -> {train, eval} -> {models, data}: nothing imports a higher layer (the
    package's top-level helpers `atomic`, `distributed`, `faults` sit below everything)."""
    wrong = []
    for name, edges in import_graph().items():
        layer = LAYERS.get(name.split(".")[1]) if name.count(".") >= 1 else None
        if layer is None:
            continue
        for target in edges:
            other = LAYERS.get(target.split(".")[1]) if target.count(".") >= 1 else None
            if other is not None and other > layer:
                wrong.append(f"{name} -> {target}")
    assert not wrong, wrong


def test_no_config_file_executes_another():
    for path in [*ROOT.glob("configs/*.py"), *ROOT.glob("tests/*.py"), *ROOT.glob("benchmarks/*.py")]:
        if path.name == "test_architecture.py":
            continue
        assert "spec_from_file_location" not in path.read_text() or path.name == "test_multiprocess.py", path


def presets(path: Path) -> list[str]:
    """The presets a config file documents: the backticked names in its docstring that it accepts."""
    from w2s_jax.configs import load_config_file

    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    found = ["paper"]
    for name in dict.fromkeys(re.findall(r"`(?:\.\.\.:)?(\w+)`", doc)):
        try:
            load_config_file(f"{path}:{name}")
        except ValueError as e:
            if "unknown preset" in str(e):
                continue
            raise
        found.append(name)
    return list(dict.fromkeys(found))


SHIPPED = sorted(ROOT.glob("configs/*.py"))
CASES = [(p, preset) for p in SHIPPED for preset in presets(p)]


def test_every_config_documents_more_than_paper_where_it_has_a_demo():
    names = {p.name: [pr for q, pr in CASES if q == p] for p in SHIPPED}
    assert "demo" in names["rm_helpful.py"] and "shapes" in names["rm_sweep.py"]
    assert len(CASES) >= 2 * len(SHIPPED) - 1  # rm_mistral7b has only `paper`


@pytest.mark.parametrize("path, preset", CASES, ids=[f"{p.stem}:{pr}" for p, pr in CASES])
def test_every_shipped_config_and_preset_validates(path, preset, tmp_path):
    """Loaded and validated without training; data paths that a machine may lack are pointed at stand-ins."""
    from w2s_jax.config_check import validate
    from w2s_jax.configs import load_config_file

    c = load_config_file(f"{path}:{preset}")
    if c.data.source == "dir":
        c.data.dir = str(tmp_path)
        (tmp_path / "helpful_train.jsonl").write_text('{"chosen": "a", "rejected": "b"}\n')
    if c.data.conflict_path and not Path(c.data.conflict_path).exists() or c.data.conflict_required:
        c.data.conflict_path = str(tmp_path / "helpful_train.jsonl")
        (tmp_path / "helpful_train.jsonl").write_text('{"chosen": "a", "rejected": "b"}\n')
    for which in ("weak", "strong", "intermediate"):  # hub names need the hub; a path must exist
        if c[which].name.startswith(("/", ".")):
            c[which].name = "gpt2"
    c.mesh.fsdp = 1
    micro = c.train.micro_batch_size or c.train.batch_size
    assert micro % 1 == 0
    validate(c, n_devices=1)
