"""A self-contained HTML viewer for episode trees (``rao-envs view trees.jsonl --out trees.html``).

One file, no network: the trees are embedded as JSON and drawn by a small script. Each tree
and each node is a collapsible ``<details>`` element; a node's line shows its id, status,
score s̃, local reward R, advantage A, depth weight w and budget used; opened, it shows the
node's goal, result or error, and its transcript (one block per message, with token counts
when token ids were recorded). Children nest inside their parent. "Expand all" and
"Collapse all" buttons sit at the top.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from typing import Any

from rao_envs.credit import Credit, assign_credit, task_id
from rao_envs.types import EpisodeTree


def tree_payload(tree: EpisodeTree, index: int, credit: Credit | None) -> dict[str, Any]:
    """The JSON the page draws for one tree."""
    per = credit.nodes[index] if credit is not None else {}
    nodes = []
    for n in tree.nodes.values():
        c = per.get(n.id)
        nodes.append({
            "id": n.id, "parent": n.parent, "depth": n.depth, "status": n.status.value, "goal": n.goal,
            "score": n.score, "reward": n.reward, "advantage": None if c is None else c.advantage,
            "weight": None if c is None else c.weight, "steps_used": n.steps_used, "budget": n.budget,
            "result": n.result, "error": n.error, "children": n.children, "policy_version": n.policy_version,
            "transcript": [
                {"role": m["role"], "content": m["content"], "tokens": len(m["token_ids"]) if "token_ids" in m else None}
                for m in n.transcript
            ],
        })
    return {"id": tree.tree_id or f"{task_id(tree)}#{index}", "env_id": tree.env_id, "seed": tree.seed,
            "stats": tree.stats(), "baseline": None if credit is None else credit.baselines[index], "nodes": nodes}


def render_html(trees: Sequence[EpisodeTree], credit: Credit | None = None, title: str = "rao_envs trees") -> str:
    """The whole page as a string. ``credit`` defaults to RAO over the batch (groups kept even without signal)."""
    trees = list(trees)
    if credit is None and trees:
        credit = assign_credit(trees, drop_no_signal=False)
    data = json.dumps([tree_payload(t, i, credit) for i, t in enumerate(trees)], default=str)
    # "<", ">" and "&" only occur inside JSON strings: \u escapes keep </script> and <!-- inert
    data = data.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return _PAGE.replace("__TITLE__", html.escape(title)).replace("__DATA__", data)


def write_html(trees: Sequence[EpisodeTree], path: str, **kwargs: Any) -> None:
    """Write :func:`render_html` to ``path``."""
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(render_html(trees, **kwargs))


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<style>
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,sans-serif;margin:1.5em;color:#1d2330;background:#fafbfc}
h1{font-size:1.3em;margin:0 0 .4em}
.bar{margin:.5em 0 1em}.bar button{margin-right:.5em;padding:.25em .8em}
details{margin:.2em 0}
details.tree{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:.4em .8em;margin:.6em 0}
details.node{margin-left:1.2em;border-left:2px solid #d0d7de;padding-left:.6em}
summary{cursor:pointer}
.id{font-family:ui-monospace,monospace;font-weight:600}
.badge{display:inline-block;border-radius:4px;padding:0 .45em;margin:0 .3em;font-size:.85em;color:#fff}
.finished{background:#1a7f37}.truncated{background:#9a6700}.infra_error{background:#cf222e}
.cancelled{background:#6e7781}.refused{background:#8250df}.running,.waiting{background:#0969da}
.num{font-family:ui-monospace,monospace;margin-left:.6em;color:#57606a}
.goal{color:#57606a;margin-left:.6em}
.body{margin:.3em 0 .5em 1em}
.msg{border-radius:4px;padding:.3em .6em;margin:.25em 0;white-space:pre-wrap;font-family:ui-monospace,monospace;font-size:12px;max-height:24em;overflow:auto}
.msg .role{font-weight:700;display:block;font-family:system-ui,sans-serif}
.system{background:#f6f8fa}.user{background:#eef6ff}.assistant{background:#effaf1}
.meta{color:#57606a;font-size:.9em}.err{color:#cf222e}
</style></head><body>
<h1>__TITLE__</h1>
<div class="bar"><button id="expand-all" type="button">Expand all</button><button id="collapse-all" type="button">Collapse all</button>
<span id="summary" class="meta"></span></div>
<div id="trees"></div>
<script id="tree-data" type="application/json">__DATA__</script>
<script>
(function(){
const TREES = JSON.parse(document.getElementById('tree-data').textContent);
const fmt = v => (v === null || v === undefined) ? '–' : (typeof v === 'number' ? (Math.round(v*1000)/1000).toString() : String(v));
function el(tag, cls, text){const e=document.createElement(tag); if(cls) e.className=cls; if(text!==undefined) e.textContent=text; return e;}
function nodeEl(tree, byId, id){
  const n = byId[id];
  const d = el('details', 'node'); d.dataset.node = n.id; d.dataset.status = n.status;
  const s = el('summary');
  s.append(el('span','id',n.id), el('span','badge '+n.status,n.status),
    el('span','num','s='+fmt(n.score)+' R='+fmt(n.reward)+' A='+fmt(n.advantage)+' w='+fmt(n.weight)+' steps '+n.steps_used+'/'+n.budget),
    el('span','goal',n.goal.length>120 ? n.goal.slice(0,120)+'…' : n.goal));
  d.append(s);
  const body = el('div','body');
  body.append(el('div','meta','depth '+n.depth+(n.policy_version!==null?' · policy v'+n.policy_version:'')+(n.children.length?' · children: '+n.children.join(', '):'')));
  if(n.result!==null) body.append(el('div','meta','result: '+(typeof n.result==='string'?n.result:JSON.stringify(n.result))));
  if(n.error) body.append(el('div','err','error: '+n.error));
  const tr = el('div','transcript');
  for(const m of n.transcript){
    const b = el('div','msg '+m.role); b.append(el('span','role',m.role+(m.tokens!==null?' ('+m.tokens+' tokens)':'')));
    b.append(document.createTextNode(m.content)); tr.append(b);
  }
  body.append(tr);
  for(const c of n.children) if(byId[c]) body.append(nodeEl(tree, byId, c));
  d.append(body);
  return d;
}
const root = document.getElementById('trees');
let nodes = 0;
TREES.forEach((t, i) => {
  const byId = {}; for(const n of t.nodes) byId[n.id] = n; nodes += t.nodes.length;
  const d = el('details','tree'); d.dataset.tree = String(i); d.open = i === 0;
  const r = byId['0'];
  const s = el('summary');
  s.append(el('span','id',t.id), el('span','badge '+(r?r.status:'running'),r?r.status:'empty'),
    el('span','num',t.stats.nodes+' nodes · depth '+t.stats.max_depth+' · '+t.stats.steps+' steps · root s='+fmt(r&&r.score)+' R='+fmt(r&&r.reward)+' baseline='+fmt(t.baseline)));
  d.append(s);
  if(r) d.append(nodeEl(t, byId, '0'));
  root.append(d);
});
document.getElementById('summary').textContent = TREES.length+' trees, '+nodes+' nodes';
const all = open => document.querySelectorAll('details').forEach(d => { d.open = open; });
document.getElementById('expand-all').addEventListener('click', () => all(true));
document.getElementById('collapse-all').addEventListener('click', () => all(false));
document.body.dataset.ready = '1';
})();
</script></body></html>
"""
