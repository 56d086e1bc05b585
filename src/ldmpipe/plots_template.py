"""``ldmpipe plots-template``: a page template for ``dvc plots show/diff --html-template`` with vega,
vega-lite and vega-embed inlined, so that the plots render offline (DVC's own page loads the three
from a CDN and shows nothing without network).

The scripts come from the installed snakemake package, which ships them for its own reports
(``snakemake/assets/data``; vega 5.21.0, vega-lite 5.2.0, vega-embed 6.20.8 in snakemake 9), and are
checked against the SHA-256 sums snakemake lists for them. Other copies can be given instead, e.g.
the ``package/build/*.min.js`` files of ``npm pack vega@5 vega-lite@5 vega-embed@6``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from .io import ArtifactError, write_text

ASSETS = ("vega/vega.js", "vega-lite/vega-lite.js", "vega-embed/vega-embed.js")  # in load order

# DVC fills {plot_divs} (one <div> with an inline vegaEmbed call per plot) and {refresh_tag}; its
# {scripts} placeholder, where the CDN <script src> tags would go, is left out on purpose.
PAGE = """<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
{refresh_tag}
<title>DVC Plot</title>
<!-- vega, vega-lite and vega-embed inlined by `ldmpipe plots-template`; their licences follow each script -->
@SCRIPTS@
<style>
body { font-family: system-ui, sans-serif; }
table { border-spacing: 15px; }
</style>
</head>
<body>
{plot_divs}
</body>
</html>
"""


def snakemake_scripts() -> list[tuple[str, str, str]]:
    """(name and version, licence text, script) of each of ``ASSETS`` as the snakemake package ships them."""
    try:
        from snakemake.assets import Assets
    except ImportError:
        raise ArtifactError("snakemake is not installed; give the three scripts with --scripts") from None
    out = []
    for name in ASSETS:
        path, spec = Path(str(Assets.base_path())) / name, Assets.spec.get(name)
        if not path.is_file() or spec is None:
            raise ArtifactError(f"{path}: not shipped by this snakemake; give the three scripts with --scripts")
        data = path.read_bytes()
        if spec.sha256 and hashlib.sha256(data).hexdigest() != spec.sha256:
            raise ArtifactError(f"{path}: SHA-256 differs from the one snakemake lists for it")
        licence = (path.parent / "LICENSE").read_text(encoding="utf-8") if (path.parent / "LICENSE").is_file() else ""
        out.append((f"{name.split('/')[0]} {spec.version}", licence, data.decode("utf-8")))
    return out


def file_scripts(paths: Sequence[str | Path]) -> list[tuple[str, str, str]]:
    if len(paths) != len(ASSETS):
        raise ArtifactError(f"--scripts takes {len(ASSETS)} files: vega, vega-lite and vega-embed, in this order")
    try:
        return [(Path(p).name, "", Path(p).read_text(encoding="utf-8")) for p in paths]
    except FileNotFoundError as e:
        raise ArtifactError(f"{e.filename}: file not found") from None


def page(scripts: Sequence[tuple[str, str, str]]) -> str:
    """The template with each script inline (a literal ``</script`` inside one is escaped as ``<\\/script``)."""
    blocks = []
    for name, licence, code in scripts:
        note, code = licence.replace("--", "- -").strip(), code.replace("</script", "<\\/script")
        blocks.append(f"<!-- {name}\n{note}\n-->\n<script>\n{code}\n</script>")
    return PAGE.replace("@SCRIPTS@", "\n".join(blocks))


def write_template(out: str | Path, scripts: Sequence[str | Path] | None = None) -> None:
    write_text(out, page(file_scripts(scripts) if scripts else snakemake_scripts()))
