"""The sweep's table, plot, labelled grids and report section, on made-up rows (no model needed).

The whole sweep through both engines is checked in test_e2e.py."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import write_params
from ldmpipe.cli import main
from ldmpipe.config import load_params
from ldmpipe.io import ArtifactError
from ldmpipe.plotting import PANEL_GAP, TEXT_LINE, fid_vs_nfe_figure, titled_panels
from ldmpipe.stages.report import sweep_section
from ldmpipe.stages.sweep_reference import reference_label
from ldmpipe.stages.sweep_report import COLUMNS, entries, sweep_table

FID = {("ddim", "leading"): [9.0, 5.0], ("ddim", "trailing"): [8.0, 6.0],
       ("heun", "leading"): [7.0, 3.0], ("heun", "trailing"): [12.0, 4.0]}  # fmt: skip


def row(sampler, spacing, steps, nfe, fid, reference=False, label=None):
    return {"sampler": sampler, "spacing": spacing, "steps": steps, "nfe": nfe, "fid": fid, "is_mean": 2.5,
            "reference": reference, "label": label or f"{sampler}, {spacing}"}  # fmt: skip


@pytest.fixture
def points(tmp_path, tiny_params):
    """A params file sweeping ddim and heun at both spacings, and the rows their stages would write."""
    tiny_params["sweep"].update(samplers=["ddim", "heun"], spacings=["leading", "trailing"], steps=[2, 4])
    params = write_params(tmp_path / "params.yaml", tiny_params)
    folder = tmp_path / "sweep"
    folder.mkdir()
    for (sampler, spacing), fids in FID.items():
        nfe = (3, 7) if sampler == "heun" else (2, 4)
        rows = [row(sampler, spacing, s, n, f) for s, n, f in zip((2, 4), nfe, fids)]
        (folder / f"{sampler}-{spacing}.json").write_text(json.dumps({"rows": rows}))
    ref = row("ddpm", "trailing", 100, 100, 4.5, True, reference_label(100, 100))
    (folder / "reference.json").write_text(json.dumps({"rows": [ref]}))
    return params, folder


def test_table_is_sampler_major_with_the_reference_last(points, tmp_path, capsys):
    params, folder = points
    out_csv, figure = tmp_path / "out/sweep.csv", tmp_path / "out/fid_vs_nfe.png"
    argv = ["sweep-report", "--params", str(params), "--points", str(folder), "--csv", str(out_csv), "--figure", str(figure)]
    assert main(argv) == 0
    rows = list(csv.DictReader(out_csv.read_text().splitlines()))
    assert list(rows[0]) == COLUMNS == ["sampler", "spacing", "steps", "nfe", "fid", "is_mean", "reference", "label"]
    assert [(r["sampler"], r["spacing"], r["steps"]) for r in rows] == [
        ("ddim", "leading", "2"), ("ddim", "leading", "4"), ("ddim", "trailing", "2"), ("ddim", "trailing", "4"),
        ("heun", "leading", "2"), ("heun", "leading", "4"), ("heun", "trailing", "2"), ("heun", "trailing", "4"),
        ("ddpm", "trailing", "100")]  # fmt: skip
    assert [r["reference"] for r in rows] == ["False"] * 8 + ["True"]
    assert rows[-1]["label"] == "reference: DDPM, all 100 steps" and "seconds" not in out_csv.read_text()
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = capsys.readouterr().out
    assert "best FID 3.000: heun, leading, 4 steps (7 NFE)" in out
    assert "reference: DDPM, all 100 steps: FID 4.500 (1.50 x the best)" in out


def test_a_missing_entry_is_named_and_nothing_is_written(points, tmp_path, capsys):
    params, folder = points
    (folder / "heun-trailing.json").unlink()
    out_csv = tmp_path / "out/sweep.csv"
    argv = ["sweep-report", "--params", str(params), "--points", str(folder), "--csv", str(out_csv),
            "--figure", str(tmp_path / "out/f.png")]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "heun-trailing.json: file not found" in err[0] and not out_csv.exists()


def test_plot_colours_by_sampler_styles_by_spacing_and_marks_the_reference(points):
    params, folder = points
    table = sweep_table(folder, entries(load_params(params).sweep))
    ax = fid_vs_nfe_figure(table).axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert ax.get_xscale() == "log"
    for sampler in ("ddim", "heun"):
        lead, trail = lines[f"{sampler}, leading"], lines[f"{sampler}, trailing"]
        assert (lead.get_linestyle(), trail.get_linestyle()) == ("-", "--")
        assert lead.get_color() == trail.get_color()
        assert list(lead.get_xdata()) == ([3, 7] if sampler == "heun" else [2, 4])
        assert list(lead.get_ydata()) == FID[sampler, "leading"]
    assert lines["ddim, leading"].get_color() != lines["heun, leading"].get_color()
    star = lines["reference: DDPM, all 100 steps (FID 4.5)"]
    assert star.get_marker() == "*" and (list(star.get_xdata()), list(star.get_ydata())) == ([100], [4.5])
    assert any(list(line.get_ydata()) == [4.5, 4.5] for line in ax.get_lines())  # the horizontal line


def test_reference_label_says_whether_it_is_all_steps():
    assert reference_label(1000, 1000) == "reference: DDPM, all 1000 steps"
    assert reference_label(250, 1000) == "reference: DDPM, 250 trailing steps (not all T = 1000)"


def test_titled_panels_size_and_content():
    rng = np.random.default_rng(0)
    panels = [([f"{n} steps", "FID 1.00"], Image.fromarray(rng.integers(0, 255, (40, 30 + n, 3), dtype=np.uint8)))
              for n in (20, 70)]  # fmt: skip
    img = titled_panels("ddim, leading", panels)
    assert img.size == (50 + 100 + 3 * PANEL_GAP, 2 * PANEL_GAP + 3 * TEXT_LINE + 40)
    top = PANEL_GAP + 3 * TEXT_LINE
    assert np.array_equal(np.asarray(img)[top : top + 40, PANEL_GAP : PANEL_GAP + 50], np.asarray(panels[0][1]))
    assert (np.asarray(img)[:top] < 128).any()  # the text is drawn
    narrow = titled_panels("t", [(["a label much wider than four pixels"], Image.new("RGB", (4, 4)))])
    assert narrow.width > 4 + 2 * PANEL_GAP  # a panel is as wide as its text


def test_report_section_marks_rows_and_links_every_grid(points, tmp_path):
    params, folder = points
    sweep = load_params(params).sweep
    table = sweep_table(folder, entries(sweep))
    table.to_csv(tmp_path / "sweep.csv", index=False, float_format="%.6g")
    grids = tmp_path / "figures/sweep"
    grids.mkdir(parents=True)
    for stem in entries(sweep):
        (grids / f"{stem}.png").write_bytes(b"")
    rel = lambda p: str(Path(p).relative_to(tmp_path))  # noqa: E731
    text = sweep_section(str(tmp_path / "sweep.csv"), "figures/fid_vs_nfe.png", str(grids), rel, sweep)
    assert "| **ddpm (reference)** | trailing | 100 | 100 | **4.500** | 2.500 |" in text
    assert "| heun | leading | 4 | 7 | **3.000** | 2.500 |" in text  # the best row
    assert "| ddim | trailing | 2 | 2 | 8.000 | 2.500 |" in text
    assert "**reference: DDPM, all 100 steps**" in text and "1.50× the best other row's (heun, leading, 4 steps" in text
    assert "is the model's own reverse process" in text
    guided = sweep_section(str(tmp_path / "sweep.csv"), "figures/fid_vs_nfe.png", str(grids), rel, sweep, autoguidance=1.5)
    assert "is the model's reverse process autoguided at w_g = 1.5, as every row" in guided and "own reverse" not in guided
    for stem in entries(sweep):
        assert f"](figures/sweep/{stem}.png)" in text
    assert text.index("![fid_vs_nfe](figures/fid_vs_nfe.png)") < text.index("](figures/sweep/ddim-leading.png)")
    (grids / "heun-leading.png").unlink()
    with pytest.raises(ArtifactError, match="heun-leading.png: file not found"):
        sweep_section(str(tmp_path / "sweep.csv"), "f.png", str(grids), rel, sweep)
