"""Regenerate docs/config.md from the field comments of src/vislab/config/_schema.py."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = {"LRFind": "lr_find"}  # class-name stem -> section key where they differ
SYMBOLS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
HEADER = """# Config reference

Every run is configured by one YAML file (a shipped recipe or your own) with seven sections;
`--set section.key=value` overrides any key. Unknown keys are errors. Defaults apply to keys a
recipe leaves out. The resolved config is saved as `config.yaml` in the run folder.
Generated from `src/vislab/config/_schema.py` by `tools/gen_config_docs.py`.
"""


def render(schema: str) -> str:
    out = [HEADER]
    section = None
    for line in schema.splitlines():
        m = re.match(r"class (\w+)Config\(_Section\):", line)
        if m:
            section = SECTIONS.get(m.group(1), m.group(1).lower())
            out += ["", f"## `{section}`", "", "| key | type | default | meaning |", "|---|---|---|---|"]
            continue
        if line.startswith("class Config("):
            section = None
            continue
        m = re.match(r"    (\w+): (.+?) = (.+?)(?:\s+#\s*(.*))?$", line)
        if section is None or m is None or m.group(1) == "model_config":
            continue
        name, typ, default, comment = m.groups()
        field = re.match(r"Field\((.+?)(,|\))", default)
        bounds = ", ".join(f"{SYMBOLS[k]} {v}" for k, v in re.findall(r"\b(gt|ge|lt|le)=([^,)]+)", default))
        shown = field.group(1) if field else default
        typ = (
            typ.replace("LearningRate", "float (> 0) or 'auto'")
            .replace("Optional[", "")
            .replace("Literal[", "one of ")
            .replace("Union[", "")
            .replace("]", "")
            .replace('"', "'")
        )
        if bounds:
            typ += f" ({bounds})"
        out.append(f"| `{name}` | {typ} | `{shown}` | {comment or ''} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    text = render((ROOT / "src/vislab/config/_schema.py").read_text())
    (ROOT / "docs/config.md").write_text(text)
