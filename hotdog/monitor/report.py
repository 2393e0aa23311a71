"""The drift report as one self-contained HTML page: verdict, test table, overlaid histograms.

Plots are inline SVG drawn here (a few lines per histogram), so reading a day of logs needs no
plotting library and the page opens anywhere without scripts or network.
"""

from __future__ import annotations

from html import escape

import numpy as np

from hotdog.monitor.drift import DriftResult, TestResult

WIDTH, HEIGHT, BINS = 320, 120, 24
COLOURS = {"reference": "#4c78a8", "current": "#f58518"}


def _histogram_svg(test: TestResult) -> str:
    reference, current = np.asarray(test.reference), np.asarray(test.current)
    if test.method == "chi-square":  # label shares: two bars per label
        edges = np.arange(len(reference) + 1, dtype=float)
        heights = {"reference": reference, "current": current}
    else:
        both = np.concatenate([reference, current])
        low, high = np.nanmin(both), np.nanmax(both)
        edges = np.linspace(low, high if high > low else low + 1, BINS + 1)
        heights = {
            name: np.histogram(values, edges)[0] / max(len(values), 1)
            for name, values in (("reference", reference), ("current", current))
        }
    top = max(float(max(values.max(initial=0) for values in heights.values())), 1e-12)
    step = WIDTH / (len(edges) - 1)
    bars = []
    for offset, (name, values) in enumerate(heights.items()):
        for index, value in enumerate(values):
            height = HEIGHT * float(value) / top
            bars.append(
                f'<rect x="{index * step + offset * step / 2:.1f}" y="{HEIGHT - height:.1f}" '
                f'width="{step / 2:.1f}" height="{height:.1f}" fill="{COLOURS[name]}"/>'
            )
    axis = f"{edges[0]:.3g} … {edges[-1]:.3g}" if test.method != "chi-square" else ""
    return (
        f'<svg width="{WIDTH}" height="{HEIGHT + 16}" role="img" aria-label="{escape(test.name)}">'
        + "".join(bars)
        + f'<text x="0" y="{HEIGHT + 13}" font-size="11">{escape(axis)}</text></svg>'
    )


def render_html(result: DriftResult, reference_name: str, current_name: str) -> str:
    verdict = "DRIFT" if result.drift else "no drift"
    colour = "#c0392b" if result.drift else "#27ae60"
    rows = []
    for test in result.tests:
        rows.append(
            f"<tr><td>{escape(test.name)}</td><td>{escape(test.method)}</td>"
            f"<td>{test.statistic:.4g}</td><td>{test.floor:.4g}</td><td>{test.p_value:.3g}</td>"
            f"<td>{'drift' if test.drift else ''}</td><td>{_histogram_svg(test)}</td></tr>"
        )
    notes = "".join(f"<li>{escape(note)}</li>" for note in result.notes)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Drift report: {verdict}</title>
<style>body{{font-family:sans-serif;margin:2em}}
td,th{{padding:4px 8px;border-bottom:1px solid #ddd}}
.verdict{{color:#fff;background:{colour};padding:6px 12px;display:inline-block}}</style></head>
<body><h1>Drift report <span class="verdict">{verdict}</span></h1>
<p>Model <code>{escape(result.model_version)}</code>. Reference: {result.reference_records} records
from <code>{escape(reference_name)}</code>. Current: {result.current_records} records from
<code>{escape(current_name)}</code> ({result.skipped_lines} unreadable lines skipped,
{result.other_versions} records of other model versions left out).</p>
<p>Verdict: drift when a test's p-value is below {result.threshold:.3g} (alpha {result.alpha}
over {len(result.tests)} tests, Bonferroni) and its statistic is above its floor (the 95th
percentile of the statistic between two random halves of the reference: smaller differences are
within the reference's own noise). Score (smallest adjusted p-value): {result.score:.3g}.</p>
<p>Histograms: <span style="color:{COLOURS["reference"]}">reference</span> and
<span style="color:{COLOURS["current"]}">current</span> (shares of each sample); the embedding
is shown on the reference's first principal direction.</p>
<table><tr><th>feature</th><th>test</th><th>statistic</th><th>floor</th><th>p-value</th>
<th></th><th></th></tr>
{"".join(rows)}</table><ul>{notes}</ul></body></html>
"""
