"""`ldmpipe compare`'s figure: one point per revision, not joined (revisions are categories)."""

from __future__ import annotations

import math

import pandas as pd

from ldmpipe.compare import fid_figure


def test_fid_figure_draws_unjoined_points_with_values():
    table = pd.DataFrame({"fid": [3.45, None, 4.29], "fid_real_floor": [0.95, 0.95, 0.55]},
                         index=pd.Index(["HEAD", "exp-a", "exp-b"], name="revision"))  # fmt: skip
    ax = fid_figure(table).axes[0]
    assert [line.get_label() for line in ax.lines] == ["FID (samples)", "real-vs-real floor"]
    assert all(line.get_linestyle() == "None" for line in ax.lines)  # no line from one experiment to the next
    fid = ax.lines[0].get_ydata()
    assert fid[0] == 3.45 and math.isnan(fid[1]) and fid[2] == 4.29
    assert [t.get_text() for t in ax.texts] == ["3.45", "4.29"]  # the missing run has no value written
    assert [t.get_text() for t in ax.get_xticklabels()] == ["HEAD", "exp-a", "exp-b"]
