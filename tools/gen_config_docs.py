"""Regenerate docs/config.md from the field comments of src/vislab/config/_schema.py.

Run `python tools/gen_config_docs.py` after changing the schema; tests/test_config.py fails while the two differ.

The schema is read as source (ast for the fields, tokenize for their comments), so the reference shows defaults and
bounds as written there (`5e-4`, `10_000`). A field's meaning is its trailing comment, wherever ruff put it in a field
that spans several lines; a field without one takes the comment block right above it when that block heads this field
alone (a block above several fields is a group heading such as `# StepLR`, not any one field's meaning).
"""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "src/vislab/config/_schema.py"
DOC = ROOT / "docs/config.md"
# Type aliases shown as prose rather than expanded.
TYPE_TEXT = {"LearningRate": "float (> 0) or 'auto'"}
SYMBOLS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
HEADER = """# Config reference

Every run is configured by one YAML file (a shipped recipe or your own) with seven sections;
`--set section.key=value` overrides any key. Unknown keys are errors. Defaults apply to keys a
recipe leaves out. The resolved config is saved as `config.yaml` in the run folder.
Generated from `src/vislab/config/_schema.py` by `tools/gen_config_docs.py`.
"""


def _comments(source: str) -> dict[int, tuple[str, bool]]:
    """Line number -> (comment text, whether the comment is the whole line)."""
    found = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            whole = not tok.line[: tok.start[1]].strip()
            found[tok.start[0]] = (tok.string.lstrip("#").strip(), whole)
    return found


def _is_none(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and node.value is None


def _union(node: ast.expr) -> list[ast.expr]:
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _union(node.left) + _union(node.right)
    return [node]


def _literal_values(node: ast.Subscript) -> str:
    items = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
    return ", ".join(repr(ast.literal_eval(item)) for item in items)


def _type(node: ast.expr, aliases: dict[str, ast.expr]) -> str:
    """The annotation in words; None is left out of unions (the default column shows when None is allowed)."""
    members = [m for m in _union(node) if not _is_none(m)]
    if len(members) > 1:
        return ", ".join(_type(m, aliases) for m in members)
    node = members[0]
    if isinstance(node, ast.Name):
        if node.id in TYPE_TEXT:
            return TYPE_TEXT[node.id]
        if node.id in aliases:
            return _type(aliases[node.id], aliases)
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
        if node.value.id == "Literal":
            return f"one of {_literal_values(node)}"
        if node.value.id == "list":
            item = node.slice
            if isinstance(item, ast.Name) and item.id in aliases:
                item = aliases[item.id]
            if isinstance(item, ast.Subscript) and isinstance(item.value, ast.Name) and item.value.id == "Literal":
                return f"list of {_literal_values(item)}"
            return f"list of {_type(item, aliases)}"
    return ast.unparse(node)


def _row(field: ast.AnnAssign, source: str, aliases: dict[str, ast.expr], meaning: str) -> str:
    typ = _type(field.annotation, aliases)
    default = field.value
    if isinstance(default, ast.Call) and isinstance(default.func, ast.Name) and default.func.id == "Field":
        bounds = [
            f"{SYMBOLS[k.arg]} {ast.get_source_segment(source, k.value)}" for k in default.keywords if k.arg in SYMBOLS
        ]
        if bounds:
            typ += f" ({', '.join(bounds)})"
        given = [k.value for k in default.keywords if k.arg == "default"]
        default = default.args[0] if default.args else given[0]
    shown = ast.get_source_segment(source, default)
    meaning = meaning.replace("|", r"\|").replace("<", r"\<")  # a table cell, not a column break or an HTML tag
    return f"| `{field.target.id}` | {typ} | `{shown}` | {meaning} |"


def _meaning(field: ast.AnnAssign, following: ast.stmt | None, comments: dict[int, tuple[str, bool]]) -> str:
    trailing = [comments[n][0] for n in range(field.lineno, field.end_lineno + 1) if n in comments]
    if trailing:
        return " ".join(trailing)
    if following is not None and following.lineno == field.end_lineno + 1 and isinstance(following, ast.AnnAssign):
        return ""  # the block above (if any) heads a group of fields
    block, n = [], field.lineno - 1
    while n in comments and comments[n][1]:
        block.insert(0, comments[n][0])
        n -= 1
    return " ".join(block)


def render(schema_text: str) -> str:
    """docs/config.md for the schema source `schema_text`."""
    tree = ast.parse(schema_text)
    comments = _comments(schema_text)
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    aliases = {
        node.targets[0].id: node.value
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
    }

    def fields(cls: ast.ClassDef) -> list[ast.AnnAssign]:
        return [s for s in cls.body if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)]

    out = [HEADER]
    for section in fields(classes["Config"]):
        cls = classes[ast.unparse(section.annotation)]
        out += ["", f"## `{section.target.id}`", "", "| key | type | default | meaning |", "|---|---|---|---|"]
        for i, stmt in enumerate(cls.body):
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                following = cls.body[i + 1] if i + 1 < len(cls.body) else None
                out.append(_row(stmt, schema_text, aliases, _meaning(stmt, following, comments)))
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    DOC.write_text(render(SCHEMA.read_text()))
