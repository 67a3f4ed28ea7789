"""report.html: the report as one self-contained page (no server, no network, nothing fetched).

It holds report.md's content (the findings block first, then every table, turned into HTML), the plots inline
as base64 PNG, and the examples where a conflict student flipped against its baseline (the no-conflict student,
or the matched one: `metrics.pairs[].settings.<name>.baseline`): the baseline right, the conflict student wrong,
per knowledge region, with the prompt, both answers, the ground truth (the chosen answer) and every model's
margin for it. The texts come from predictions.jsonl when it is there (`predictions.py`); without it the rows
show the example ids alone. The flip table sorts by a click on a column head and filters by region, setting and
free text; a URL fragment sets the filters when the page opens
(`report.html#region=S_k%26W_uk&setting=implicit&q=bleach`).
"""
from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path
from typing import Any

from w2s_jax.atomic import write_atomic
from w2s_jax.eval import deception as dm
from w2s_jax.eval.predictions import FILE as PREDICTIONS_FILE
from w2s_jax.eval.predictions import read_predictions, region_name
from w2s_jax.eval.results_file import read_pairs

MAX_ROWS = 5000  # flip rows written into the page; a note says when more were left out
TEXT_CHARS = 600  # a prompt or answer longer than this is cut in the table (the full text is in its title)
MARGIN_ROLES = (dm.WEAK_ROLE, dm.STRONG_ROLE)

STYLE = """body{font:14px/1.45 system-ui,sans-serif;margin:1.5em auto;max-width:1400px;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.2em}td,th{border:1px solid #ccc;padding:3px 6px;vertical-align:top}
th{background:#f2f2f2;cursor:pointer}code{background:#f4f4f4;padding:0 2px}img{max-width:100%;max-height:520px}
figure{display:inline-block;margin:0 1em 1em 0}
#flips td.t{max-width:28em;white-space:pre-wrap;font-size:12px}.filters{position:sticky;top:0;background:#fff;
padding:.4em 0}.warn{color:#a00}"""

SCRIPT = """function applyFilter(){
 const q=document.getElementById('q').value.toLowerCase(),reg=document.getElementById('region').value,
  set=document.getElementById('setting').value;let shown=0;
 for(const tr of document.querySelectorAll('#flips tbody tr')){
  const ok=(!q||tr.textContent.toLowerCase().includes(q))&&(!reg||tr.dataset.region===reg)&&
   (!set||tr.dataset.setting===set);tr.hidden=!ok;if(ok)shown++;}
 document.getElementById('shown').textContent=shown;}
function sortBy(th){
 const tb=th.closest('table').tBodies[0],i=[...th.parentNode.children].indexOf(th),
  dir=th.dataset.dir==='asc'?'desc':'asc';th.dataset.dir=dir;
 const key=r=>{const t=r.cells[i].textContent,n=parseFloat(t);return isNaN(n)?t:n;};
 const rows=[...tb.rows];rows.sort((a,b)=>{const x=key(a),y=key(b);
  const c=(typeof x==='number'&&typeof y==='number')?x-y:String(x).localeCompare(String(y));
  return dir==='asc'?c:-c;});rows.forEach(r=>tb.appendChild(r));}
document.querySelectorAll('table th').forEach(th=>th.addEventListener('click',()=>sortBy(th)));
for(const id of ['q','region','setting'])document.getElementById(id).addEventListener('input',applyFilter);
const hash=new URLSearchParams(location.hash.slice(1));
for(const id of ['q','region','setting'])if(hash.has(id))document.getElementById(id).value=hash.get(id);
applyFilter();"""


# ------------------------------------------------------------------------------------------------ markdown


def _inline(text: str) -> str:
    out = html.escape(text)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", out)


def _cells(line: str) -> list[str]:
    cells = re.split(r"(?<!\\)\|", line.strip()[1:-1])
    return [c.strip().replace("\\|", "|") for c in cells]


def markdown_to_html(markdown: str) -> str:
    """The subset report.md uses: headings, tables, bullets, paragraphs, `code` and **bold**."""
    out: list[str] = []
    lines, i = markdown.splitlines(), 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            out.append(f"<h{level}>{_inline(line[level:].strip())}</h{level}>")
        elif line.startswith("|"):
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append(lines[i])
                i += 1
            head, body = _cells(block[0]), [_cells(b) for b in block[2:]]
            out.append("<table><thead><tr>" + "".join(f"<th>{_inline(h)}</th>" for h in head) + "</tr></thead>"
                       "<tbody>" + "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>"
                                           for row in body) + "</tbody></table>")
            continue
        elif line.startswith("- "):
            items = []
            while i < len(lines) and lines[i].startswith("- "):
                text = lines[i][2:]
                cls = ' class="warn"' if text.startswith("WARNING") else ""
                items.append(f"<li{cls}>{_inline(text)}</li>")
                i += 1
            out.append("<ul>" + "".join(items) + "</ul>")
            continue
        elif line.strip():
            out.append(f"<p>{_inline(line)}</p>")
        i += 1
    return "\n".join(out)


# ------------------------------------------------------------------------------------------------ flips


def flip_rows(results: dict, metrics: dict, predictions: list[dict] | None) -> list[dict]:
    """One row per (pair, setting, seed, example) where the setting's baseline is right and its student wrong."""
    pairs, _, _ = read_pairs(results, Path("results.json"))
    texts: dict[tuple, dict] = {}
    for row in predictions or []:
        texts.setdefault((row.get("pair"), row["id"]), row)
    sweep = bool(results.get("pairs"))
    out = []
    for pair, pm in zip(pairs, metrics.get("pairs", [])):
        for name, setting in pm.get("settings", {}).items():
            student, baseline = setting.get("student"), setting.get("baseline")
            for run in pair["runs"]:
                correct, margin = run["correct"], run["margin"]
                if student not in correct or baseline not in correct:
                    continue
                for i in range(len(correct[student])):
                    if not (correct[baseline][i] and not correct[student][i]):
                        continue
                    region = (region_name(bool(correct[dm.WEAK_ROLE][i]), bool(correct[dm.STRONG_ROLE][i]))
                              if dm.WEAK_ROLE in correct and dm.STRONG_ROLE in correct else "")
                    roles = (baseline, student, *MARGIN_ROLES)
                    m = {r: (None if margin.get(r) is None else float(margin[r][i])) for r in roles}
                    t = texts.get((pair["name"] if sweep else None, i), {})
                    out.append({"pair": pair["name"], "setting": name, "student": student, "baseline": baseline,
                                "seed": run["seed"], "id": i, "region": region, "source": t.get("source", ""),
                                "line": t.get("line"), "prompt": t.get("prompt"), "chosen": t.get("chosen"),
                                "rejected": t.get("rejected"), "margins": m})
    return out


def _text_cell(text: str | None) -> str:
    if text is None:
        return '<td class="t">(no predictions.jsonl)</td>'
    shown = text.strip()  # HH dialogues open with blank lines
    short = shown if len(shown) <= TEXT_CHARS else shown[:TEXT_CHARS] + " …"
    return f'<td class="t" title="{html.escape(text, quote=True)}">{html.escape(short)}</td>'


def _num(x: Any) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def flips_section(rows: list[dict]) -> str:
    settings = sorted({r["setting"] for r in rows})
    regions = [q for q in dm.REGIONS if any(r["region"] == q for r in rows)]
    counts = "<table><thead><tr><th>setting</th>" + "".join(f"<th>{html.escape(q)}</th>" for q in dm.REGIONS) + \
        "</tr></thead><tbody>" + "".join(
            f"<tr><td>{html.escape(s)}</td>" + "".join(
                f"<td>{sum(1 for r in rows if r['setting'] == s and r['region'] == q)}</td>" for q in dm.REGIONS)
            + "</tr>" for s in settings) + "</tbody></table>"
    option = lambda v, label: f'<option value="{html.escape(v, quote=True)}">{html.escape(label)}</option>'  # noqa
    filters = ('<div class="filters">Region <select id="region">' + option("", "all")
               + "".join(option(q, q) for q in regions) + '</select> Setting <select id="setting">'
               + option("", "all") + "".join(option(s, s) for s in settings)
               + '</select> Text <input id="q" size="30" placeholder="filter rows"> '
               + '<span id="shown">' + str(min(len(rows), MAX_ROWS)) + "</span> rows shown</div>")
    head = ["pair", "setting", "seed", "id", "region", "source", "prompt", "chosen (ground truth)", "rejected",
            "margin baseline", "margin student", "margin W", "margin S"]
    body = []
    for r in rows[:MAX_ROWS]:
        m = r["margins"]
        src = f"{r['source']}:{r['line']}" if r["source"] and r["line"] else r["source"]
        body.append(f'<tr data-region="{html.escape(r["region"], quote=True)}" '
                    f'data-setting="{html.escape(r["setting"], quote=True)}">'
                    + "".join(f"<td>{html.escape(str(v))}</td>" for v in (r["pair"], r["setting"], r["seed"],
                                                                          r["id"], r["region"], src))
                    + _text_cell(r["prompt"]) + _text_cell(r["chosen"]) + _text_cell(r["rejected"])
                    + "".join(f"<td>{_num(m.get(k))}</td>" for k in (r["baseline"], r["student"], *MARGIN_ROLES))
                    + "</tr>")
    note = (f"<p>{len(rows) - MAX_ROWS} more rows left out (the page keeps the first {MAX_ROWS}).</p>"
            if len(rows) > MAX_ROWS else "")
    return ("<h2>Flipped examples</h2><p>Test examples the setting's baseline gets right and its conflict student "
            "gets wrong, per knowledge region (margins are for the ground-truth answer: positive = right). "
            "Click a column head to sort.</p>" + counts + filters + note
            + '<table id="flips"><thead><tr>' + "".join(f"<th>{html.escape(h)}</th>" for h in head)
            + "</tr></thead><tbody>" + "".join(body) + "</tbody></table>")


# ------------------------------------------------------------------------------------------------ page


def plots_section(plots_dir: Path) -> str:
    parts = []
    for png in sorted(plots_dir.glob("*.png")) if plots_dir.is_dir() else []:
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        parts.append(f'<figure><img alt="{html.escape(png.stem)}" src="data:image/png;base64,{data}">'
                     f"<figcaption>{html.escape(png.name)}</figcaption></figure>")
    return "<h2>Plots</h2>" + "".join(parts) if parts else ""


def render_html(markdown: str, results: dict, metrics: dict, predictions: list[dict] | None,
                plots_dir: Path) -> str:
    body = markdown_to_html(markdown)
    cut = body.find("<h2>Summary</h2>")  # findings first, then the plots and flips, then every table
    top, rest = (body[:cut], body[cut:]) if cut >= 0 else (body, "")
    flips = flips_section(flip_rows(results, metrics, predictions))
    meta = html.escape(json.dumps({k: results.get(k) for k in ("experiment", "n_test", "seeds")}))
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Weak-to-strong deception "
            f"report</title><style>{STYLE}</style></head><body><!-- {meta} -->{top}{plots_section(plots_dir)}"
            f"{flips}{rest}<script>{SCRIPT}</script></body></html>\n")


def write_report_html(workdir: str | Path, results: dict, metrics: dict, markdown: str) -> Path:
    """Write `workdir`/report.html atomically; reads `workdir`/predictions.jsonl and plots/*.png when present."""
    workdir = Path(workdir)
    pred_path = workdir / PREDICTIONS_FILE
    predictions, problem = None, ""
    try:
        predictions = read_predictions(pred_path) if pred_path.is_file() else None
    except (OSError, ValueError) as e:  # the texts are an extra: the page is still written, saying why they lack
        problem = f"<p class=\"warn\">predictions.jsonl not read: {html.escape(str(e))}</p>"
    page = render_html(markdown, results, metrics, predictions, workdir / "plots")
    page = page.replace("<h2>Flipped examples</h2>", "<h2>Flipped examples</h2>" + problem, 1)
    write_atomic(workdir / "report.html", lambda f: f.write(page))
    return workdir / "report.html"
