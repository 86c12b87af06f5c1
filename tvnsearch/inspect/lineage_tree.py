"""A search's lineage as a tree, the part of a run no dashboard shows: who descends from whom,
the mutation on each edge, the children that never earned a fitness shown faintly.

x is the order told and y the fitness: evolution's climb reads left to right, a family as the
lines from a parent. A child rejected, failed or a duplicate without a fitness of its own sits at
its parent's fitness. The best candidate's ancestry is drawn bold, and clicking any candidate
draws its own (a few lines of the page's script over the parent links in ``layout.meta``). Edges
are one line with gaps and, from ``GL_FROM`` candidates, markers are WebGL: the whole report of
10,000 candidates is written in under 2 s (``bench/report_bench.py``).
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from tvnsearch.inspect.figures import (
    FRONT_COLOUR,
    OTHER_COLOUR,
    REJECTED_COLOUR,
    axis_label,
    hover_text,
    number,
)
from tvnsearch.inspect.hypervolume import in_told_order
from tvnsearch.search.lineage import ancestors, best
from tvnsearch.status import Status

if TYPE_CHECKING:
    import plotly.graph_objects as go

MAX_EDGE_LABELS = 40  # edges named by their mutation; beyond, the best ancestry's alone
GL_FROM = 3000  # candidates: from here markers are drawn by WebGL, which SVG cannot keep up with
FAINT_EDGE_COLOUR = "rgba(80, 80, 80, 0.25)"
# The largest families (the descendants of one sampled founder), each in a colour of its own,
# so that who descends from whom reads at a glance among hundreds; the others are grey. Neither
# red (the best ancestry) nor purple (the one selected) nor the rejected's blue.
FAMILY_COLOURS = ("#2ca02c", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#bcbd22", "#7f7f7f")
OTHERS_COLOUR = "#444444"
TRAINED = "trained"  # the legend group of the trained nodes, a trace per family
TRAINED_EDGES = "edges to trained children"  # and of their edges
SELECTED_COLOUR = "#9467bd"  # the ancestry of the candidate clicked
BEST = "best ancestry"
SELECTED = "selected ancestry (click a candidate)"  # the trace ``ANCESTRY_SCRIPT`` redraws
STATUS_COLOURS = {
    Status.TRAINED: "#444444",
    Status.REJECTED: REJECTED_COLOUR,
    Status.FAILED: "black",
    Status.DUPLICATE: OTHER_COLOUR,
}
# Children that never earned a fitness of their own (or copied one), drawn faintly.
FAINT_SYMBOLS = {
    Status.REJECTED: "x-thin-open",
    Status.FAILED: "x-thin-open",
    Status.DUPLICATE: "circle-open",
}
# Run after the figure is drawn (plotly's ``post_script``): a click on a node or an edge redraws
# the selected ancestry through the parents that ``layout.meta`` lists.
ANCESTRY_SCRIPT = """
var gd = document.getElementById("{plot_id}"), links = gd.layout.meta, at = {};
links.ids.forEach(function (id, i) { at[id] = i; });
var trace = gd.data.findIndex(function (t) { return t.name === "__SELECTED__"; });
gd.on("plotly_click", function (event) {
  var x = [], y = [];
  for (var i = at[event.points[0].customdata]; i !== undefined; i = at[links.parent[i]]) {
    x.push(links.x[i]); y.push(links.y[i]);
  }
  if (x.length) Plotly.restyle(gd, {x: [x], y: [y]}, [trace]);
});
""".replace("__SELECTED__", SELECTED)


def _tree(frame: pd.DataFrame) -> pd.DataFrame:
    """The lineage in the order told, with ``told`` (1, 2, ...), ``parent_row`` (its parent's
    row, -1 for none) and ``y``: its fitness, else its parent's (a child rejected, failed or a
    duplicate without one), else NaN (a sampled candidate without fitness: not in the tree)."""
    told = in_told_order(frame).reset_index(drop=True)
    parents = told["parent_id"].to_numpy(dtype=np.float64, na_value=-1.0).astype(np.int64)
    parent_row = pd.Index(told["candidate_id"]).get_indexer(parents)
    fitness = told["fitness"].to_numpy(dtype=np.float64, na_value=np.nan)
    inherited = fitness[parent_row] if len(told) else fitness  # row -1: masked out below
    y = np.where(np.isnan(fitness) & (parent_row >= 0), inherited, fitness)
    tree = told.assign(told=np.arange(1, len(told) + 1), parent_row=parent_row, y=y)
    return tree.assign(family=_families(tree))


def _families(tree: pd.DataFrame) -> np.ndarray:
    """Each row's family: the index in ``FAMILY_COLOURS`` of its founder (the sampled candidate
    its ancestry starts from) when that founder is among the most fruitful, else -1."""
    parent_row = tree["parent_row"].to_numpy()
    root = np.where(parent_row >= 0, parent_row, np.arange(len(tree)))
    while not np.array_equal(root[root], root):  # pointer jumping: log(depth) rounds
        root = root[root]
    trained = tree["status"].eq(str(Status.TRAINED)).to_numpy(dtype=bool) & (parent_row >= 0)
    sizes = pd.Series(root[trained]).value_counts()
    founders = sizes.index[: len(FAMILY_COLOURS)].to_numpy()
    family = np.full(len(tree), -1)
    for index, founder in enumerate(founders):
        family[root == founder] = index
    return family


def lineage_figure(frame: pd.DataFrame) -> go.Figure:
    """The search as a tree: x the order told, y fitness, a line from each parent to each child.

    Trained candidates are markers hovered with ``hover_text``; children rejected, failed or
    duplicated are faint, at their parent's fitness, on faint dotted edges. An invisible marker
    midway along each edge names its mutation when hovered; labels name it on every edge when
    there are few, else on the best candidate's ancestry, drawn bold. ``layout.meta`` holds
    each node's id, place and parent, for ``ANCESTRY_SCRIPT``. The edges of each kind are one
    trace with gaps between them, so that 10,000 draw at once."""
    import plotly.graph_objects as go

    tree = _tree(frame)
    nodes = tree[np.isfinite(tree["y"].to_numpy())]
    edges = _edges(tree, nodes)
    chain = _best_chain(frame, tree)
    kind = "scattergl" if len(tree) >= GL_FROM else "scatter"
    fig = go.Figure()
    _add_edges(fig, edges)
    _add_nodes(fig, nodes, kind)
    _add_ancestries(fig, chain, kind)
    _add_mutations(fig, edges, chain, kind)
    _lineage_layout(fig, frame, tree, nodes, len(edges))
    return fig


def _edges(tree: pd.DataFrame, nodes: pd.DataFrame) -> pd.DataFrame:
    """One row per edge drawn: both ends' places, the child's id and mutation, ``faint``."""
    child = nodes[nodes["parent_row"].to_numpy() >= 0]
    parent = tree.iloc[child["parent_row"].to_numpy()]
    drawn = np.isfinite(parent["y"].to_numpy())
    child, parent = child[drawn], parent[drawn]
    return pd.DataFrame(
        {
            "x0": parent["told"].to_numpy(),
            "y0": parent["y"].to_numpy(),
            "x1": child["told"].to_numpy(),
            "y1": child["y"].to_numpy(),
            "parent_id": parent["candidate_id"].to_numpy(dtype=np.int64),
            "candidate_id": child["candidate_id"].to_numpy(dtype=np.int64),
            "mutation": child["mutation"].to_numpy(dtype=object),
            "faint": child["status"].to_numpy(dtype=object) != str(Status.TRAINED),
            "family": child["family"].to_numpy(),
        }
    )


def _add_edges(fig: go.Figure, edges: pd.DataFrame) -> None:
    """Edges to trained children in their family's colour, fainter the more there are; edges to
    children without a fitness of their own grey and dotted."""
    alpha = float(np.clip(2.0 / np.sqrt(max(len(edges), 1)), 0.15, 0.6))
    trained = edges[~edges["faint"].to_numpy(dtype=bool)]
    for family in sorted(set(trained["family"].tolist())):
        x, y = _segments(trained[trained["family"].to_numpy() == family])
        line = {"color": _rgba(_family_colour(family), alpha), "width": 1}
        group = {"legendgroup": TRAINED_EDGES, "showlegend": False}
        fig.add_scatter(x=x, y=y, mode="lines", line=line, hoverinfo="skip", **group)
    x, y = _segments(edges[edges["faint"].to_numpy(dtype=bool)])
    line = {"color": FAINT_EDGE_COLOUR, "width": 1, "dash": "dot"}
    name = "edge to a child without fitness"
    fig.add_scatter(x=x, y=y, mode="lines", line=line, name=name, hoverinfo="skip")


def _family_colour(family: int) -> str:
    return FAMILY_COLOURS[family] if family >= 0 else OTHERS_COLOUR


def _rgba(colour: str, alpha: float) -> str:
    red, green, blue = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({red}, {green}, {blue}, {alpha:.2f})"


def _segments(edges: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Each edge's two ends then a gap (NaN), as one line's x and y."""
    gap = np.full(len(edges), np.nan)
    x = np.column_stack([edges["x0"], edges["x1"], gap]).ravel()
    y = np.column_stack([edges["y0"], edges["y1"], gap]).ravel()
    return x, y


def _best_chain(frame: pd.DataFrame, tree: pd.DataFrame) -> pd.DataFrame:
    """The tree's rows of the best candidate's ancestry, the best first (none: no rows)."""
    top = best(frame, 1)
    if top.empty:
        return tree.iloc[:0]
    chain = ancestors(frame, int(top.at[0, "candidate_id"]))["candidate_id"]
    return tree.iloc[pd.Index(tree["candidate_id"]).get_indexer(chain)]


def _add_ancestries(fig: go.Figure, chain: pd.DataFrame, kind: str) -> None:
    """The best ancestry, bold, and the one the page's script draws when a node is clicked:
    over the nodes (in WebGL's layer too, when the nodes are drawn there)."""
    for name, colour, rows in ((BEST, FRONT_COLOUR, chain), (SELECTED, SELECTED_COLOUR, None)):
        fig.add_trace(
            {
                "type": kind,
                "x": [] if rows is None else rows["told"].to_numpy(dtype=np.float64),
                "y": [] if rows is None else rows["y"].to_numpy(dtype=np.float64),
                "mode": "lines+markers",
                "line": {"color": colour, "width": 3},
                "marker": {"color": colour, "size": 7},
                "name": name,
                "hoverinfo": "skip",
            }
        )


def _add_nodes(fig: go.Figure, nodes: pd.DataFrame, kind: str) -> None:
    size = float(np.clip(14 - 2.5 * np.log10(max(len(nodes), 1)), 4, 10))
    nodes = nodes.assign(hover=_node_texts(nodes))
    trained = nodes[nodes["status"].eq(str(Status.TRAINED)).to_numpy(dtype=bool)]
    for family in sorted(set(trained["family"].tolist()), key=lambda f: (f < 0, f)):
        rows = trained[trained["family"].to_numpy() == family]
        colour = _family_colour(family)
        marker = {"size": size, "color": colour, "line": {"width": 0.5, "color": "white"}}
        name = _family_name(trained, family)
        _add_points(fig, kind, rows, name=name, marker=marker, legendgroup=TRAINED)
    for status, symbol in FAINT_SYMBOLS.items():
        rows = nodes[nodes["status"].eq(str(status)).to_numpy(dtype=bool)]
        colour = STATUS_COLOURS[status]
        line = {"width": 1.5, "color": colour}
        marker = {"size": size, "color": colour, "symbol": symbol, "opacity": 0.45, "line": line}
        _add_points(fig, kind, rows, name=str(status), marker=marker)


def _family_name(trained: pd.DataFrame, family: int) -> str:
    if family < 0:
        return "trained (other families)" if (trained["family"] >= 0).any() else "trained"
    members = trained[trained["family"].to_numpy() == family]
    founder = members.loc[members["parent_row"] < 0, "candidate_id"]
    who = f"#{founder.iloc[0]}" if len(founder) else "a founder not trained"
    return f"family of {who} ({len(members):,})"


def _node_texts(nodes: pd.DataFrame) -> list[str]:
    """A trained node's ``hover_text``, another's status and reason; then where it came from."""
    trained = nodes["status"].eq(str(Status.TRAINED)).to_numpy(dtype=bool)
    rows = zip(nodes["candidate_id"], nodes["status"], nodes["reason"], strict=True)
    heads = np.array([f"candidate {i} {s}: {html.escape(number(why, ''))}" for i, s, why in rows])
    heads = heads.astype(object)
    heads[trained] = [hover_text(row) for _, row in nodes[trained].iterrows()]
    origins = zip(nodes["parent_id"], nodes["mutation"], strict=True)
    return [
        f"{head}<br>{'sampled' if pd.isna(p) else f'parent #{p}, mutation'} {html.escape(m)}"
        for head, (p, m) in zip(heads, origins, strict=True)
    ]


def _add_points(fig: go.Figure, kind: str, rows: pd.DataFrame, **style: Any) -> None:
    """Markers at (``told``, ``y``) of ``rows``, hovered with their ``hover``; a click on one
    selects the ancestry of its ``candidate_id`` (``ANCESTRY_SCRIPT``)."""
    fig.add_trace(
        {
            "type": kind,
            "x": rows["told"].to_numpy(dtype=np.float64),
            "y": rows["y"].to_numpy(dtype=np.float64),
            "customdata": rows["candidate_id"].to_numpy(dtype=np.int64),
            "mode": "markers",
            "hovertext": rows["hover"].to_numpy(dtype=object),
            "hovertemplate": "%{hovertext}<extra></extra>",
            **style,
        }
    )


def _add_mutations(fig: go.Figure, edges: pd.DataFrame, chain: pd.DataFrame, kind: str) -> None:
    """An invisible marker midway along each edge, hovered with its mutation; a label on each
    edge when there are few, else on the best ancestry's."""
    mid = edges.assign(told=(edges["x0"] + edges["x1"]) / 2, y=(edges["y0"] + edges["y1"]) / 2)
    links = zip(mid["parent_id"], mid["candidate_id"], mid["mutation"], strict=True)
    mid["hover"] = [f"#{p} → #{c}: {html.escape(m)}" for p, c, m in links]
    hidden = {"size": 10, "opacity": 0}
    _add_points(fig, kind, mid, name="mutation", marker=hidden, showlegend=False)
    if len(mid) > MAX_EDGE_LABELS:
        mid = mid[mid["candidate_id"].isin(chain["candidate_id"])]
    fig.add_scatter(
        x=mid["told"],
        y=mid["y"],
        text=[html.escape(m) for m in mid["mutation"]],
        mode="text",
        textposition="top center",
        textfont={"size": 9, "color": "#333333"},
        name="mutation (label)",
        hoverinfo="skip",
    )


def _lineage_layout(
    fig: go.Figure, frame: pd.DataFrame, tree: pd.DataFrame, nodes: pd.DataFrame, num_edges: int
) -> None:
    parents = nodes["parent_id"].to_numpy(dtype=np.float64, na_value=-1.0).astype(np.int64)
    fig.update_layout(
        title={"text": _caption(tree, len(nodes), num_edges)},
        xaxis={"title": "candidates told (in the order told)", "rangemode": "tozero"},
        yaxis={"title": axis_label("fitness", frame)},
        meta={
            "ids": nodes["candidate_id"].to_numpy(dtype=np.int64).tolist(),
            "x": nodes["told"].tolist(),
            "y": nodes["y"].tolist(),
            "parent": parents.tolist(),
        },
        hovermode="closest",
        hoverlabel={"align": "left"},
        template="plotly_white",
        legend={"orientation": "h", "y": -0.15},
        height=700,
    )


def _caption(tree: pd.DataFrame, num_nodes: int, num_edges: int) -> str:
    """How many candidates the tree draws, how many it leaves out, and why."""
    caption = f"{num_nodes:,} of {len(tree):,} candidates, {num_edges:,} edges parent to child"
    if len(tree) > num_nodes:
        caption += f"; not drawn: {len(tree) - num_nodes:,} sampled, then rejected or failed"
    if num_nodes and not (tree["parent_row"] >= 0).any():
        how = ", ".join(sorted(tree["mutation"].dropna().unique()))
        caption += f"<br><sup>no candidate has a parent: each was sampled ({how}), none bred</sup>"
    return caption
