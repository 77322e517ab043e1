"""A tiny document model rendered twice: Markdown with PNG files beside it, and one self-contained HTML file."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from ..files import atomic_write_bytes, atomic_write_text

PNG_DPI = 110

# Inline style only: the HTML must open anywhere, offline, with nothing fetched.
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1150px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{border-bottom:2px solid #0072B2;padding-bottom:.2em}h2{margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}
th{background:#f2f4f7}td.num{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;height:auto;display:block;margin:.6em 0}pre{background:#f6f8fa;padding:.8em;overflow-x:auto;font-size:.85em}
.note{color:#555;font-size:.92em}
"""


def figure_png(fig: Figure, dpi: int = PNG_DPI) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def _is_number(v: Any) -> bool:
    """Numbers and pre-formatted numeric strings ("83.10", "1.2e-3", "12.5%") are right-aligned."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return True
    try:
        float(str(v).rstrip("%s").replace(",", ""))
        return True
    except ValueError:
        return False


@dataclass
class Document:
    title: str
    blocks: list[tuple] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(("h", level, text))

    def para(self, text: str, note: bool = False) -> None:
        self.blocks.append(("p", text, note))

    def table(self, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        self.blocks.append(("table", list(header), [list(r) for r in rows]))

    def image(self, name: str, image: Figure | bytes, alt: str) -> None:
        png = figure_png(image) if isinstance(image, Figure) else image
        self.blocks.append(("img", name, png, alt))

    def code(self, text: str, summary: str | None = None) -> None:
        self.blocks.append(("code", text, summary))

    def images(self) -> list[tuple[str, bytes]]:
        return [(b[1], b[2]) for b in self.blocks if b[0] == "img"]

    # -- Markdown ------------------------------------------------------------------------------

    def to_markdown(self, image_dir: str) -> str:
        out = [f"# {self.title}", ""]
        for b in self.blocks:
            kind = b[0]
            if kind == "h":
                out += ["#" * b[1] + " " + b[2], ""]
            elif kind == "p":
                out += [f"*{b[1]}*" if b[2] else b[1], ""]
            elif kind == "table":
                header, rows = b[1], b[2]
                out.append("| " + " | ".join(_md_cell(h) for h in header) + " |")
                out.append(
                    "|"
                    + "|".join("---:" if rows and _is_number(rows[0][i]) else "---" for i in range(len(header)))
                    + "|"
                )
                out += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows]
                out.append("")
            elif kind == "img":
                out += [f"![{b[3]}]({image_dir}/{b[1]})", ""]
            elif kind == "code":
                if b[2]:
                    out += [f"<details><summary>{html.escape(b[2])}</summary>", ""]
                out += ["```", b[1].rstrip("\n"), "```", ""]
                if b[2]:
                    out += ["</details>", ""]
        return "\n".join(out).rstrip("\n") + "\n"

    # -- HTML ----------------------------------------------------------------------------------

    def to_html(self) -> str:
        esc = html.escape
        out = [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{esc(self.title)}</title><style>{CSS}</style></head><body>",
            f"<h1>{esc(self.title)}</h1>",
        ]
        for b in self.blocks:
            kind = b[0]
            if kind == "h":
                out.append(f"<h{b[1]}>{esc(b[2])}</h{b[1]}>")
            elif kind == "p":
                out.append(f'<p class="note">{esc(b[1])}</p>' if b[2] else f"<p>{esc(b[1])}</p>")
            elif kind == "table":
                out.append(
                    "<table><thead><tr>" + "".join(f"<th>{esc(str(h))}</th>" for h in b[1]) + "</tr></thead><tbody>"
                )
                for r in b[2]:
                    cells = "".join(
                        f'<td class="num">{esc(_fmt(c))}</td>' if _is_number(c) else f"<td>{esc(_fmt(c))}</td>"
                        for c in r
                    )
                    out.append(f"<tr>{cells}</tr>")
                out.append("</tbody></table>")
            elif kind == "img":
                data = base64.b64encode(b[2]).decode("ascii")
                out.append(f'<img alt="{esc(b[3])}" src="data:image/png;base64,{data}">')
            elif kind == "code":
                pre = f"<pre>{esc(b[1])}</pre>"
                out.append(f"<details><summary>{esc(b[2])}</summary>{pre}</details>" if b[2] else pre)
        out.append("</body></html>")
        return "\n".join(out) + "\n"

    def write(self, md_path: Path, html_path: Path, image_dir: Path) -> None:
        """report.md + its PNGs in `image_dir` (a sibling folder), and report.html with the same PNGs inlined."""
        image_dir.mkdir(parents=True, exist_ok=True)
        for name, png in self.images():
            atomic_write_bytes(image_dir / name, png)
        atomic_write_text(md_path, self.to_markdown(image_dir.relative_to(md_path.parent).as_posix()))
        atomic_write_text(html_path, self.to_html())


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _md_cell(v: Any) -> str:
    return _fmt(v).replace("|", "\\|").replace("\n", " ")
