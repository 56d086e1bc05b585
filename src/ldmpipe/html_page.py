"""A Markdown document as one self-contained HTML page: rendered by markdown-it-py (CommonMark plus
tables), every image embedded as a data URI, styles inline, no script, and a Content-Security-Policy
that allows the page no request at all, so it looks the same offline, from a CI artifact or a mail.
"""

from __future__ import annotations

import base64
import html
import re
import string
from pathlib import Path
from urllib.parse import unquote

from .io import ArtifactError

MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif", ".svg": "image/svg+xml"}

# img-src data: only; no script-src, connect-src or font-src: everything but inline images and styles is refused
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

CSS = """
body { font: 15px/1.5 system-ui, sans-serif; color: #1a1a1a; margin: 0; display: flex; }
nav { position: sticky; top: 0; align-self: flex-start; min-width: 13em; padding: 1em; font-size: 14px; }
nav a { display: block; color: #245; text-decoration: none; padding: 2px 0; }
main { max-width: 1150px; padding: 0 1.5em 3em; overflow-x: auto; }
h1 { margin-top: .6em; } h2 { border-bottom: 1px solid #ddd; padding-top: .6em; }
table { border-collapse: collapse; margin: .6em 0; font-size: 14px; }
th, td { border: 1px solid #ccc; padding: 3px 9px; text-align: left; }
tr:nth-child(even) td { background: #f6f8fa; }
img { max-width: 100%; border: 1px solid #eee; }
pre { background: #f6f8fa; padding: .8em; overflow-x: auto; font-size: 13px; }
code { font-size: 90%; }
"""

PAGE = string.Template("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="$csp">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title</title>
<style>$css</style>
</head>
<body>
<nav>$nav</nav>
<main>
$body</main>
</body>
</html>
""")


def data_uri(path: Path) -> str:
    """``data:<mime>;base64,...`` of an image file (PNG, JPEG, GIF or SVG)."""
    mime = MIME.get(path.suffix.lower())
    if mime is None:
        raise ArtifactError(f"{path}: not an image the report can embed (expected {', '.join(MIME)})")
    try:
        return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"
    except FileNotFoundError:
        raise ArtifactError(f"{path}: file not found (an image of the report)") from None


def slug(text: str) -> str:
    return re.sub(r"[^\w]+", "-", text.lower()).strip("-") or "section"


def render(markdown: str, base: str | Path, title: str) -> str:
    """The page for ``markdown``, whose image paths are relative to ``base`` (the Markdown file's folder).

    Level-2 headings get ids and a link each in the side navigation; raw HTML in the Markdown is escaped."""
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    tokens = md.parse(markdown)
    nav = []
    for i, tok in enumerate(tokens):
        if tok.type == "heading_open" and tok.tag == "h2":  # the next token holds the heading's text
            anchor = slug(tokens[i + 1].content)
            tok.attrSet("id", anchor)
            nav.append(f'<a href="#{anchor}">{html.escape(tokens[i + 1].content)}</a>')
        for child in tok.children or []:
            if child.type == "image":
                src = str(child.attrGet("src"))
                if re.match(r"^[a-z][a-z0-9+.-]*:", src, re.I):
                    raise ArtifactError(f"{src}: the report embeds local images only")
                child.attrSet("src", data_uri(Path(base) / unquote(src)))
    body = md.renderer.render(tokens, md.options, {})
    return PAGE.substitute(csp=CSP, title=html.escape(title), css=CSS, nav="\n".join(nav), body=body)
