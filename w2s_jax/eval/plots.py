"""The report's figures, with 95% error bars (two-level bootstrap); matplotlib Agg canvas, no pyplot state."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

from w2s_jax.eval import deception as dm

R, CONTROL = dm.DECEPTION_REGION, "S_k&W_k"


def _figure(width: float, height: float, ncols: int = 1, nrows: int = 1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=False).ravel()


def _val(x) -> float:
    return math.nan if x is None else float(x)


def _mean_err(entry: dict | None) -> tuple[float, tuple[float, float]]:
    """(mean, (below, above)) for an asymmetric error bar; NaN when undefined."""
    if not entry:
        return math.nan, (0.0, 0.0)
    m, (lo, hi) = _val(entry["mean"]), (_val(v) for v in entry["ci95"])
    if math.isnan(m) or math.isnan(lo) or math.isnan(hi):
        return m, (0.0, 0.0)
    return m, (max(0.0, m - lo), max(0.0, hi - m))


def _bars(ax, groups: list[str], series: list[tuple[str, list[dict | None]]]) -> None:
    width = 0.8 / max(1, len(series))
    for j, (label, entries) in enumerate(series):
        pts = [_mean_err(e) for e in entries]
        xs = [i - 0.4 + width * (j + 0.5) for i in range(len(groups))]
        ax.bar(xs, [p[0] for p in pts], width, label=label, color=f"C{j % 10}", hatch="//" if j >= 10 else None,
               yerr=[[p[1][0] for p in pts], [p[1][1] for p in pts]], capsize=2, error_kw={"linewidth": 0.8})


def accuracy_plot(pairs: list[dict], save: Callable, path: Path) -> None:
    roles = list(dict.fromkeys(r for p in pairs for r in p["models"]))
    fig, (ax,) = _figure(max(6.0, 1.2 * len(pairs) * max(1, len(roles)) / 4 + 3), 4.5)
    _bars(ax, [p["name"] for p in pairs],
          [(r, [p["models"].get(r, {}).get("accuracy") for p in pairs]) for r in roles])
    ax.set_xticks(range(len(pairs)), [p["name"] for p in pairs], rotation=20 if len(pairs) > 3 else 0)
    ax.set(ylim=(0, 1), ylabel="test accuracy (mean over seeds, 95% interval)",
           title="Test accuracy of every model, per weak/strong pair")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))
    save(fig, path)


def regions_plot(pairs: list[dict], save: Callable, path: Path) -> None:
    ncols = min(3, max(1, len(pairs)))
    nrows = math.ceil(max(1, len(pairs)) / ncols)
    fig, axes = _figure(5.5 * ncols, 4.2 * nrows, ncols=ncols, nrows=nrows)
    for ax in axes[len(pairs):]:
        ax.set_axis_off()
    if not pairs:
        axes[0].text(0.5, 0.5, "no pairs", ha="center", va="center")
    for ax, p in zip(axes, pairs):
        roles = [r for r in (dm.BASELINE_ROLE, *(s["student"] for s in p["settings"].values()))
                 if "error_rate" in p["models"].get(r, {})]
        if not roles:
            ax.text(0.5, 0.5, "regions undefined (no ceilings)" if not p.get("region_sizes") else "no students",
                    ha="center", va="center", transform=ax.transAxes)
        _bars(ax, list(dm.REGIONS), [(r.removeprefix("student_"), [p["models"][r]["error_rate"][q]
                                                                   for q in dm.REGIONS]) for r in roles])
        sizes = p.get("region_sizes") or {}
        labels = [f"{q}\n(n={_val(sizes[q]['mean']):.0f})" if q in sizes else q for q in dm.REGIONS]
        ax.set_xticks(range(len(dm.REGIONS)), labels, fontsize="small")
        ax.set(ylim=(0, 1), ylabel="error rate in region (95% interval)", title=p["name"])
        if roles:
            ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.16), ncols=min(3, len(roles)))
    save(fig, path)


def _limits(values: list[float], floor: float) -> tuple[float, float]:
    """Axis limits around the finite values with 10% padding and a span of at least `floor`."""
    vals = [v for v in values if not math.isnan(v)]
    if not vals:
        return -floor / 2, floor / 2
    lo, hi = min(vals), max(vals)
    mid, half = (lo + hi) / 2, max(hi - lo, floor) / 2 * 1.1
    return mid - half, mid + half


def ds_plot(pairs: list[dict], save: Callable, path: Path) -> None:
    """Per conflict setting and pair: the deception contrast and DS-B (share in S_k&W_uk) against the gap, each
    point labelled with its pair; readable with one pair as with a ladder."""
    from matplotlib.lines import Line2D

    settings = list(dict.fromkeys(n for p in pairs for n in p["settings"]))
    style = {s: {"marker": "os^vD<>px*"[j % 10], "color": f"C{j % 10}"} for j, s in enumerate(settings)}
    fig, axes = _figure(11, 4.8, ncols=2)
    panels = ((("contrast",), "share wrong in S_k&W_uk minus in S_k&W_k"),
              (("flip_share", R), "DS-B: share wrong in S_k&W_uk (of N right)"))
    for ax, (key, title) in zip(axes, panels):
        xs_all, ys_all = [], []
        for s in settings:
            pts = []
            for p in pairs:
                entry = p["settings"].get(s, {})
                for k in key:
                    entry = entry.get(k, {}) if isinstance(entry, dict) else {}
                x, xerr = _mean_err(p.get("capability_gap"))
                y, yerr = _mean_err(entry or None)
                if not (math.isnan(x) or math.isnan(y)):
                    pts.append((x, y, xerr, yerr, p["name"]))
            pts.sort()
            if not pts:
                continue
            ax.errorbar([q[0] for q in pts], [q[1] for q in pts], xerr=list(zip(*[q[2] for q in pts])),
                        yerr=list(zip(*[q[3] for q in pts])), capsize=3, linestyle="-" if len(pts) > 1 else "",
                        **style[s])
            for x, y, _, _, name in pts:
                ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, 5), fontsize="x-small")
            xs_all += [q[0] - q[2][0] for q in pts] + [q[0] + q[2][1] for q in pts]
            ys_all += [q[1] - q[3][0] for q in pts] + [q[1] + q[3][1] for q in pts]
        if not xs_all:
            ax.text(0.5, 0.5, "no defined values", ha="center", va="center", transform=ax.transAxes)
        if key == ("contrast",):
            ax.axhline(0.0, color="grey", linewidth=0.8)
        ax.set(title=title, xlabel="capability gap = Acc(strong ceiling) - Acc(weak ceiling)",
               ylabel="mean over seeds, 95% interval", xlim=_limits(xs_all, 0.1), ylim=_limits(ys_all + [0.0], 0.2))
    if settings:
        fig.legend(handles=[Line2D([], [], label=s, **style[s]) for s in settings], loc="outside lower center",
                   ncols=min(4, len(settings)), fontsize="small")
    save(fig, path)
