"""The reports people open in a browser: the pipeline's self-contained HTML page, Snakemake's report and
DVC's plots page with the offline template.

Without a browser: the page embeds every image and refuses remote ones; provenance (the commit, the paths
that differ from it, an earlier commit's metrics); the offline plots template. In headless Chromium, on one
tiny Snakemake run (the session's, `tiny_snakemake_run`): each page loads with no request leaving it and
no failed request, every <img> decodes, vega draws every chart, and a screenshot is saved (to
$LDMPIPE_SCREENSHOTS if set). Without Chromium these tests skip, unless $LDMPIPE_REQUIRE_BROWSER is set
(.ci/run sets it and installs Chromium).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from browser import IMAGES, Browser, find_chromium
from conftest import ENV, ROOT, copy_run, sh
from ldmpipe import html_page, plots_template, provenance
from ldmpipe.io import ArtifactError
from ldmpipe.stages.report import metrics_diff, provenance_line

PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")


# --- the page, without a browser ---------------------------------------------------------------------


def test_page_embeds_every_image_and_allows_no_request(tmp_path):
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "a.png").write_bytes(PNG)
    md = "# T\n\n## Metrics ↓\n\n| a | b |\n|---|---|\n| **x** | 1 |\n\n![a](figures/a.png)\n\n<script>alert(1)</script>\n\n## Params\n"
    page = html_page.render(md, tmp_path, "a <title>")
    assert f'src="data:image/png;base64,{base64.b64encode(PNG).decode()}"' in page
    assert not re.search(r"""(src|href)=["']?(https?:|//|file:)""", page) and "<script" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<title>a &lt;title&gt;</title>" in page
    assert f'content="{html_page.CSP}"' in page and "default-src 'none'" in html_page.CSP
    assert '<h2 id="metrics">' in page and '<a href="#metrics">Metrics ↓</a>' in page and '<a href="#params">' in page
    assert "<table>" in page and "<td><strong>x</strong></td>" in page


@pytest.mark.parametrize("image, message", [("figures/missing.png", "missing.png: file not found"),
                                            ("https://example.com/a.png", "the report embeds local images only"),
                                            ("notes.txt", "not an image the report can embed")])  # fmt: skip
def test_page_refuses_images_it_cannot_embed(tmp_path, image, message):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ArtifactError, match=re.escape(message)):
        html_page.render(f"![x]({image})\n", tmp_path, "t")


# --- provenance --------------------------------------------------------------------------------------


def git_repo(path: Path) -> Path:
    sh("git init -q -b main && git config user.email t@t && git config user.name t", path)
    (path / ".gitignore").write_text("/ignored/\n")
    (path / "reports").mkdir()
    (path / "code.py").write_text("a = 1\n")
    sh("git add -A && git commit -qm one", path)
    return path


def test_work_tree_names_the_commit_and_what_differs_from_it(tmp_path):
    repo = git_repo(tmp_path)
    head = sh("git rev-parse HEAD", repo).strip()
    assert provenance.work_tree(repo, ignore=["reports"]) == {"commit": head, "modified": []}
    (repo / "ignored").mkdir()
    (repo / "ignored" / "x").write_text("git ignores it")
    (repo / "reports" / "r.json").write_text("an output of the run")
    assert provenance.work_tree(repo, ignore=["reports"])["modified"] == []
    assert provenance.work_tree(repo)["modified"] == ["reports/r.json"]
    (repo / "code.py").write_text("a = 2\n")
    (repo / "new.py").write_text("")
    assert provenance.work_tree(repo, ignore=["reports"])["modified"] == ["code.py", "new.py"]
    # ignore is relative to the folder; paths are from the top of the work tree
    assert provenance.work_tree(repo / "reports", ignore=["."])["modified"] == ["code.py", "new.py"]
    sh("git add code.py", repo)  # staged counts too
    assert provenance.work_tree(repo, ignore=[repo / "reports"])["modified"] == ["code.py", "new.py"]
    outside = tmp_path.parent / f"{tmp_path.name}-plain"
    outside.mkdir()
    assert provenance.work_tree(outside) is None


def test_earlier_metrics_are_heads_or_else_head_1s(tmp_path):
    repo = git_repo(tmp_path)
    metrics = repo / "reports" / "metrics.json"
    assert provenance.earlier_json(repo, metrics, {"fid": 3.0}) is None  # never committed
    for fid in (3.0, 2.0):
        metrics.write_text(json.dumps({"fid": fid}))
        sh(f"git add -A && git commit -qm fid{fid}", repo)
    head, head1 = sh("git rev-parse HEAD HEAD~1", repo).split()
    # rerun on the committed result: HEAD holds the same metrics, HEAD~1 the previous ones
    assert provenance.earlier_json(repo, metrics, {"fid": 2.0}) == ("HEAD~1", head1, {"fid": 3.0})
    # a new run, not committed yet: HEAD holds the previous metrics
    assert provenance.earlier_json(repo, "reports/metrics.json", {"fid": 1.0}) == ("HEAD", head, {"fid": 2.0})


def test_report_lines_for_provenance_and_the_metrics_diff():
    assert provenance_line(None) == "Built outside a git work tree: no commit to name."
    assert "was clean" in provenance_line({"commit": "abc", "modified": []})
    line = provenance_line({"commit": "abc", "modified": [f"f{i}" for i in range(10)]})
    assert "**not clean**: 10 path(s)" in line and "`f7` and 2 more" in line and "`f8`" not in line
    table = metrics_diff({"fid": 6.0, "is_mean": 3.0, "extractor": "classifier"},
                         ("HEAD", "0123456789abcdef", {"fid": 8.0, "is_mean": 3.0, "extractor": "other"}))  # fmt: skip
    assert "Against HEAD (`0123456789`)" in table and "| fid | 8 | 6 | -2 (-25.0%) |" in table
    assert "| is_mean | 3 | 3 | +0 (+0.0%) |" in table and "extractor" not in table
    assert metrics_diff({"fid": 1.0}, None) == "Nothing to compare with: HEAD and HEAD~1 hold the same metrics as this run, or none."


# --- the offline template for DVC's plots page ---------------------------------------------------------


def script_bodies(page: str) -> list[str]:
    return re.findall(r"<script>\n(.*?)\n</script>", page, flags=re.S)


def test_plots_template_inlines_snakemakes_vega_scripts_unchanged(tmp_path):
    from snakemake.assets import Assets

    out = tmp_path / "offline.html"
    assert subprocess.run([sys.executable, "-m", "ldmpipe", "plots-template", str(out)], env=ENV).returncode == 0
    page = out.read_bytes().decode()  # not read_text: it would turn the \r\n in vega-embed.js into \n
    assert "{plot_divs}" in page and "{scripts}" not in page  # DVC puts its CDN <script src> tags at {scripts}
    assert not re.search(r"<script[^>]*\bsrc=", page) and not re.search(r"""(src|href)=["']?https?:""", page)
    bodies = script_bodies(page)
    assert [hashlib.sha256(b.encode()).hexdigest() for b in bodies] == [Assets.spec[a].sha256 for a in plots_template.ASSETS]
    assert "BSD" in page or "Redistribution and use" in page  # the licences travel with the code


def test_plots_template_escapes_script_ends_and_takes_other_scripts(tmp_path):
    files = []
    for name in ("vega.js", "vega-lite.js", "vega-embed.js"):
        files.append(tmp_path / name)
        files[-1].write_text(f"var s = '</script>'; // {name}")
    plots_template.write_template(tmp_path / "t.html", files)
    bodies = script_bodies((tmp_path / "t.html").read_text())
    assert bodies == [f"var s = '<\\/script>'; // {n}" for n in ("vega.js", "vega-lite.js", "vega-embed.js")]
    r = subprocess.run([sys.executable, "-m", "ldmpipe", "plots-template", str(tmp_path / "x.html"), "--scripts", "a.js",
                        "b.js", "c.js"], env=ENV, capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
    assert r.returncode == 1 and r.stderr.strip() == "ldmpipe plots-template: error: a.js: file not found"
    assert not (tmp_path / "x.html").exists()


def test_every_stage_has_a_caption_for_snakemakes_report():
    """Every rule's outputs are captioned; check is no rule (the Snakefile's onstart hook) and shows nothing."""
    stages = set(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]) - {"check"}
    assert {p.stem for p in (ROOT / "captions").glob("*.rst")} == {*stages, "workflow"}


# --- in a browser, on a tiny run -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    exe = find_chromium()
    if exe is None:
        if os.environ.get("LDMPIPE_REQUIRE_BROWSER"):
            pytest.fail("LDMPIPE_REQUIRE_BROWSER is set, but no Chromium is installed (apt-get install chromium)")
        pytest.skip("headless Chromium is not installed (Debian: apt-get install chromium); .ci/run installs it")
    with Browser(exe) as b:
        yield b


@pytest.fixture(scope="module")
def run(tiny_snakemake_run, tmp_path_factory) -> Path:
    """A copy of the session's tiny Snakemake run (committed, then run)."""
    return copy_run(tiny_snakemake_run, tmp_path_factory.mktemp("report") / "repo")


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("LDMPIPE_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def only_local(page: dict, path: Path) -> None:
    """No failed request, and none but the page itself and what it embeds (data:) or ships beside it."""
    assert page["failed"] == []
    assert page["requests"][0] == path.as_uri(), page["requests"][:3]
    assert all(u.startswith(("data:", path.parent.as_uri() + "/")) for u in page["requests"]), page["requests"]


def assert_screenshot(path: Path, min_height: int) -> None:
    with Image.open(path) as img:
        assert img.format == "PNG" and img.width >= 1000 and img.height >= min_height, img.size
        assert np.asarray(img.convert("L")).std() > 20  # not a blank page


PAGE = f"""({{images: {IMAGES}, headings: [...document.querySelectorAll('h2')].map(h => h.textContent),
  tables: document.querySelectorAll('table').length, sections: document.querySelectorAll('nav a').length}})"""


@pytest.mark.e2e
def test_report_html_loads_offline_and_shows_every_image(run, browser, shots):
    html, md = run / "reports" / "report.html", (run / "reports" / "report.md").read_text()
    page = browser.open_page(html, PAGE)
    only_local(page, html)
    images, headings = page["result"]["images"], page["result"]["headings"]
    # autoencoder (2), per-timestep error, dataset, samples, trajectory, losses, FID vs NFE, and a sweep
    # grid per (sampler, spacing) and for the reference row
    sweep = yaml.safe_load((run / "params.yaml").read_text())["sweep"]
    assert len(images) == md.count("![") == 8 + len(sweep["samplers"]) * len(sweep["spacings"]) + 1
    assert all(i["complete"] and i["width"] > 0 and i["height"] > 0 and i["src"].startswith("data:image/png") for i in images)
    assert headings == ["Metrics", "Autoencoder", "Diffusion model: error at each noise level", "Figures",
                        "Sampler sweep", "Params"] and page["result"]["sections"] == len(headings)  # fmt: skip
    assert page["result"]["tables"] >= 6  # metrics, others, autoencoder, channels, per-timestep, sweep
    commit = sh("git rev-parse HEAD", run).strip()
    assert f"Built at commit `{commit}`; the work tree was clean" in md and "Denoising trajectory" in md
    browser.screenshot(page["session"], shots / "report.png")
    assert_screenshot(shots / "report.png", 3000)


@pytest.mark.e2e
def test_snakemake_report_works_and_loads_offline(run, browser, shots):
    from dvc.repo import Repo

    sh("snakemake --report snakemake-report.html", run)  # no --cores needed
    with Repo(str(run)) as repo:  # what the Snakefile marks: every metric and plot of dvc.yaml, and report.html
        marked = {o.def_path for st in repo.index.stages for o in st.outs if o.metric or o.plot} | {"reports/report.html"}
    script = "({results: results, categories: Object.keys(categories), app: document.getElementById('app').innerText})"
    page = browser.open_page(run / "snakemake-report.html", script)
    only_local(page, run / "snakemake-report.html")
    results = page["result"]["results"]
    assert set(results) == marked and all(r["caption"].strip() for r in results.values())
    assert set(page["result"]["categories"]) == {"Data", "Autoencoder", "Evaluator", "Diffusion model",
                                                 "Samples and metrics", "Sampler sweep", "Guidance sweep", "Report"}  # fmt: skip
    assert "ldmpipe" in page["result"]["app"] and "Sampler sweep" in page["result"]["app"]
    assert "ddim" in results["reports/figures/sweep/ddim-leading.png"]["caption"]  # captions see the wildcards
    browser.screenshot(page["session"], shots / "snakemake-report.png")
    assert_screenshot(shots / "snakemake-report.png", 800)


CHARTS = f"""({{charts: [...document.querySelectorAll('.vega-embed')].map(e => e.querySelectorAll('.marks').length),
  images: {IMAGES}}})"""


@pytest.mark.e2e
def test_dvc_plots_render_offline_with_the_template(run, browser, shots, tmp_path):
    sh(f"ldmpipe plots-template {tmp_path / 'offline.html'}", run)
    sh(f"dvc plots show --html-template {tmp_path / 'offline.html'} -o {tmp_path / 'offline'}", run)
    sh(f"dvc plots show -o {tmp_path / 'cdn'}", run)
    index = tmp_path / "offline" / "index.html"
    n_charts = index.read_text().count("vegaEmbed('#")
    assert n_charts == 4 and not re.search(r"<script[^>]*\bsrc=", index.read_text())  # 2 losses, timestep error, sweep
    page = browser.open_page(index, CHARTS)
    only_local(page, index)
    assert page["result"]["charts"] == [1] * n_charts  # vega drew each chart (its <canvas class="marks">)
    assert page["result"]["images"] and all(i["width"] > 0 for i in page["result"]["images"])
    browser.screenshot(page["session"], shots / "dvc-plots.png")
    assert_screenshot(shots / "dvc-plots.png", 1500)
    # the control: DVC's own page asks a CDN for the same scripts, which is what the template avoids
    cdn = browser.open_page(tmp_path / "cdn" / "index.html", "1")
    assert any(u.startswith("https://cdn.") for u in cdn["requests"])


def test_class_names_stay_literal_text_in_the_report(tmp_path):
    """An image folder's sub-folder names become class names: a `|` must not split the per-class table's
    cells, and `*`, `_`, backticks or brackets must not format or link."""
    from ldmpipe.stages.report_conditional import class_section

    names = ["a|b", "*star*", "_x_", "[y](z)", "`c`", "plain"]
    m = {"class_accuracy": 0.5, "class_accuracy_real": 1.0, "guidance_scale": 1.5, "nfe": 20,
         "n_per_class": dict.fromkeys(names, 4), "class_accuracy_per_class": dict.fromkeys(names, 0.5),
         "fid_per_class": dict.fromkeys(names, 1.0), "fid_per_class_real_floor": dict.fromkeys(names, 0.5)}  # fmt: skip
    page = html_page.render(class_section(m, names), tmp_path, "classes")
    rows = re.findall(r"<tr>(.*?)</tr>", page, re.S)
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", r, re.S) for r in rows[1:]]
    assert [c[0] for c in cells] == ["a|b", "*star*", "_x_", "[y](z)", "`c`", "plain"]
    assert {len(c) for c in cells} == {5}
