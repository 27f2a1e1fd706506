"""Section 5, the experiment: every arm against random (mean ± std over seeds, relative change in AP
and AR@100), the declared contrasts (paired differences with CIs, Holm-corrected p, verdicts) and
their forest plot as ``qualmet experiment`` drew it, how well each metric finds each injected error
type, and the configuration that was run."""
from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

from ..summary import n_seeds, seeds_note
from .html import esc, img, num, section, table
from .inputs import ExperimentData
from .output import Output


def _pm(mean, std) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    return f"{mean:.3f}" + (f" <span class='muted'>± {std:.3f}</span>" if std is not None and np.isfinite(std) else "")


def _rel(v, paired_seeds=None, seeds: int = 0) -> tuple[str, str]:
    """A relative change as text and CSS class, with the seeds it rests on when fewer than the experiment's."""
    if v is None or not np.isfinite(v):
        return "–", ""
    note = seeds_note(paired_seeds, seeds)
    note = f" <span class='muted'>({note})</span>" if note else ""
    return f"{v:+.1f}%{note}", "pos" if v > 0 else ("neg" if v < 0 else "")


def summary_table(summary: pd.DataFrame, baseline: str = "random") -> str:
    """Arm rows: AP, AP50, AR@100 as mean ± std, relative change vs the baseline, paired p if present."""
    has_p = "AP_p" in summary.columns
    heads = ["arm", "seeds", "AP (mAP@[.5:.95])", "AP50", "AR@100", "ΔAP vs random", "ΔAR@100 vs random"]
    heads += ["paired p (AP / AR)"] if has_p else []
    body = []
    seeds = n_seeds(summary)
    for r in summary.to_dict("records"):
        base = r["arm"] == baseline
        ap, ap_c = ("baseline", "") if base else _rel(r.get("AP_rel"), r.get("AP_paired_seeds"), seeds)
        ar, ar_c = ("baseline", "") if base else _rel(r.get("AR100_rel"), r.get("AR100_paired_seeds"), seeds)
        cells = [f"<td><b>{esc(r['arm'])}</b></td>", f"<td class='num'>{num(r.get('seeds'))}</td>",
                 f"<td class='num'>{_pm(r.get('AP_mean'), r.get('AP_std'))}</td>",
                 f"<td class='num'>{_pm(r.get('AP50_mean'), r.get('AP50_std'))}</td>",
                 f"<td class='num'>{_pm(r.get('AR100_mean'), r.get('AR100_std'))}</td>",
                 f"<td class='num {ap_c}'>{ap}</td>", f"<td class='num {ar_c}'>{ar}</td>"]
        if has_p:
            p = "" if base else f"{num(r.get('AP_p'), 2)} / {num(r.get('AR100_p'), 2)}"
            cells.append(f"<td class='num'>{p}</td>")
        body.append(f"<tr class='{'baseline' if base else ''}'>{''.join(cells)}</tr>")
    h = "".join(f"<th class='{'' if i == 0 else 'num'}'>{esc(x)}</th>" for i, x in enumerate(heads))
    return f"<div class='tablewrap'><table><thead><tr>{h}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"


def contrasts_table(path) -> str:
    """contrasts.csv (written beside summary.md) as a table; '' when the folder has none."""
    if not path.is_file():
        return ""
    t = pd.read_csv(path)
    rows = []
    for r in t.to_dict("records"):
        cells = [r["contrast"], num(r.get("seeds"))]
        for stat in ("AP", "AR100"):
            d, lo, hi = (r.get(f"{stat}_{k}") for k in ("diff", "lo", "hi"))
            ci = f"{d:+.2f}" + (f" [{lo:+.2f}, {hi:+.2f}]" if np.isfinite(lo) else "") if np.isfinite(d) else "–"
            cells += [ci, num(r.get(f"{stat}_p_holm"), 2), r.get(f"{stat}_verdict", "")]
        g = r.get("AP_gap", np.nan)
        cells.append(f"{100 * g:.0f}%" if g is not None and np.isfinite(g) else "–")
        rows.append(cells)
    heads = ["contrast", "seeds", "ΔAP (points) [95% CI]", "p (Holm)", "AP", "ΔAR@100 (points) [95% CI]",
             "p (Holm)", "AR@100", "noise gap recovered (AP)"]
    return table(heads, rows, num_cols=(1, 2, 3, 5, 6, 8), cls="compact")


def _heat(v: float, lo: float, mid: float, hi: float) -> str:
    """Background colour: red below ``mid``, white at ``mid``, green towards ``hi``."""
    if v is None or not np.isfinite(v):
        return ""
    if v >= mid:
        t = min(1.0, (v - mid) / max(hi - mid, 1e-9))
        r, g, b = (int(255 - t * (255 - 120)), int(255 - t * (255 - 200)), int(255 - t * (255 - 130)))
    else:
        t = min(1.0, (mid - v) / max(mid - lo, 1e-9))
        r, g, b = (int(255 - t * (255 - 240)), int(255 - t * (255 - 150)), int(255 - t * (255 - 140)))
    return f"background: rgb({r},{g},{b})"


def detection_pivot(le: pd.DataFrame, value: str, mid: float) -> str:
    """metric x error type table of ``value`` (auroc or ap), heat-coloured; frame-level rows marked."""
    le = le.copy()
    le["col"] = np.where(le["level"] == "frame", le["type"] + " (frame)", le["type"])
    piv = le.pivot_table(index="metric", columns="col", values=value, aggfunc="first")
    cols = [c for c in piv.columns if c != "any"] + (["any"] if "any" in piv.columns else [])
    piv = piv[cols]
    pos = le.drop_duplicates("col").set_index("col")["positives"]
    h = "<th>metric</th>" + "".join(f"<th class='num' title='{int(pos.get(c, 0))} positives'>{esc(c)}</th>" for c in cols)
    body = []
    for m, row in piv.iterrows():
        cells = "".join(f"<td class='heat' style='{_heat(v, 0.3 if value == 'auroc' else 0, mid, 1.0)}'>"
                        f"{'–' if not np.isfinite(v) else f'{v:.2f}'}</td>" for v in row.to_numpy(dtype=float))
        body.append(f"<tr><td><code>{esc(m)}</code></td>{cells}</tr>")
    return (f"<div class='tablewrap'><table class='compact'><thead><tr>{h}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table></div>")


def _notes(md: str | None) -> str:
    """The prose paragraphs of summary.md (not its title, table or image)."""
    if not md:
        return ""
    paras = [p.strip() for p in re.split(r"\n\s*\n", md) if p.strip()]
    keep = [p for p in paras if not p.startswith(("#", "|", "!["))]
    return "".join(f"<p class='small'>{esc(p)}</p>" for p in keep)


def experiment_section(exp: ExperimentData, out: Output, number: int = 5) -> str:
    cfg = exp.config
    spec = cfg.get("spec") or {}
    det, data, noise = spec.get("detector") or {}, spec.get("data") or {}, spec.get("noise") or {}
    kv = [("folder", f"<code>{esc(exp.dir)}</code>"), ("name", esc(spec.get("name", exp.dir.name)) +
                                                       (" <span class='badge'>quick</span>" if cfg.get("quick") else "")),
          ("arms", esc(", ".join(a.get("name", "?") for a in spec.get("arms", [])))),
          ("seeds", esc(", ".join(str(s) for s in spec.get("seeds", [])))), ("budget", esc(spec.get("budget"))),
          ("data", esc(f"{data.get('source', '?')}, {data.get('train', '?')} train / {data.get('test', '?')} test"
                       + (f", {data.get('size')} px" if data.get("size") else ""))),
          ("label noise", esc(f"rate {noise.get('rate', 0)}" + (f", seed {noise.get('seed')}" if noise else ""))),
          ("detector", esc(f"{det.get('recipe', '?')} × {det.get('iters', '?')} iterations")),
          ("qualmet", esc(cfg.get("qualmet_version", "?")))]
    kv_html = "".join(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>" for k, v in kv)
    parts = []
    if exp.summary is not None and len(exp.summary):
        chart = ""
        if (exp.dir / "summary.png").is_file():
            chart = img(out.copy(exp.dir / "summary.png", "assets/experiment/summary.png"),
                        "paired differences with 95% CIs", cls="plot wide")
        parts.append(f'<div class="card"><h3>Every arm against random</h3>{summary_table(exp.summary)}'
                     f'<h4>Declared contrasts</h4>{contrasts_table(exp.dir / "contrasts.csv")}'
                     f'{_notes(exp.summary_md)}</div>')
        if chart:
            parts.append(f'<div class="card"><h3>Paired differences</h3><p class="small muted">dots: mean difference '
                         f'over seeds, in points; lines: 95% CI; dashed: no difference; grey: the ±1-point '
                         f'no-effect band.</p>{chart}</div>')
    else:
        parts.append('<div class="note">No summary yet: the experiment has not finished an arm together with '
                     'the random baseline.</div>')
    if exp.results is not None and len(exp.results):
        cols = [c for c in ("arm", "seed", "AP", "AP50", "AP75", "AR1", "AR10", "AR100", "n_frames", "n_boxes")
                if c in exp.results.columns]
        rows = [[r[c] if c in ("arm",) else num(r[c], 3) for c in cols] for r in exp.results.to_dict("records")]
        parts.append(f'<details class="card more"><summary>Per-seed results ({len(exp.results)} runs)</summary>'
                     f'{table(cols, rows, num_cols=range(1, len(cols)), cls="compact")}</details>')
    if exp.label_errors is not None and len(exp.label_errors):
        le = exp.label_errors
        parts.append('<div class="card"><h3>Finding the injected label errors</h3><p class="small muted">How well '
                     'ranking by each metric (its suspicious side first) finds each injected error type, on the '
                     'noisy training split. AUROC: 0.5 = chance, 1 = every error ranked above every clean box. '
                     'AP: area under precision-recall (its chance level is the share of errors).</p>'
                     f'<h4>AUROC</h4>{detection_pivot(le, "auroc", 0.5)}'
                     f'<h4>Average precision</h4>{detection_pivot(le, "ap", 0.0)}</div>')
    spec_txt = exp.spec_toml
    parts.append(f'<div class="grid2"><div class="card"><h3>Configuration</h3><table class="kv compact">{kv_html}</table></div>'
                 f'<div class="card"><h3>Spec{" (spec.toml)" if spec_txt else ""}</h3>'
                 f'<pre>{esc(spec_txt if spec_txt else _json(spec))}</pre></div></div>')
    return section("experiment", number, "Experiment", "".join(parts),
                   "Every selection strategy trains the same detector on the same budget; the verdict is the "
                   "change against the random subset.")


def _json(obj) -> str:
    import json

    return json.dumps(obj, indent=2, default=str)
