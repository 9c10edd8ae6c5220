"""Build the Grafana dashboard ops open first: deploy/grafana/dashboards/diffusion.json (`make dashboard`).

The panels are listed in dashboard_jobs.py and dashboard_service.py (one entry per panel); here their
layout (grid positions, ids) is computed. tests/deploy/test_dashboard.py checks that the committed JSON
is what this script builds, that every expression parses (promtool) and that every metric it names is
exported by a real API and worker.

To add a panel: add it to one of those, run `make dashboard`, commit both files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dashboard_jobs
import dashboard_service
from dashboard_model import Panel

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "deploy" / "grafana" / "dashboards" / "diffusion.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
SECTIONS = dashboard_jobs.ROWS + dashboard_service.ROWS


def _panel(panel: Panel, pid: int, x: int, y: int) -> dict[str, Any]:
    targets = []
    for i, query in enumerate(panel.queries):
        target: dict[str, Any] = {"datasource": DATASOURCE, "expr": query.expr, "refId": chr(ord("A") + i)}
        if query.legend:
            target["legendFormat"] = query.legend
        if query.instant or panel.kind == "table":
            target |= {"instant": True, "range": False, "format": "table"}
        targets.append(target)
    out: dict[str, Any] = {
        "id": pid,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": panel.unit, **panel.extra}, "overrides": []},
        "targets": targets,
    }
    if panel.kind == "timeseries":
        out["options"] = {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    elif panel.kind == "stat":
        out["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}}
    elif panel.kind == "table":
        out["transformations"] = [{"id": "organize", "options": {"excludeByName": {"Time": True, "Value": True}}}]
    return out


def build() -> dict[str, Any]:
    """The dashboard as Grafana's JSON model."""
    panels: list[dict[str, Any]] = []
    pid, y = 1, 0
    for title, section in SECTIONS:
        panels.append(
            {
                "id": pid,
                "type": "row",
                "title": title,
                "collapsed": False,
                "panels": [],
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
            }
        )
        pid, y, x, row_height = pid + 1, y + 1, 0, 0
        for panel in section:
            if x + panel.width > 24:
                x, y, row_height = 0, y + row_height, 0
            panels.append(_panel(panel, pid, x, y))
            pid, x, row_height = pid + 1, x + panel.width, max(row_height, panel.height)
        y += row_height
    return {
        "uid": "diffusion-service",
        "title": "Diffusion service",
        "description": "Built by scripts/build_dashboard.py; edit there, then `make dashboard`.",
        "tags": ["diffusion"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-3h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                    "refresh": 1,
                    "options": [],
                },
                {
                    "name": "model",
                    "label": "Model",
                    "type": "query",
                    "datasource": DATASOURCE,
                    "definition": "label_values(diffusion_queue_depth, model)",
                    "query": {"query": "label_values(diffusion_queue_depth, model)", "refId": "model"},
                    "includeAll": True,
                    "multi": True,
                    "allValue": ".*",
                    "current": {"text": "All", "value": "$__all"},
                    "refresh": 2,
                    "sort": 1,
                    "hide": 0,
                    "options": [],
                },
            ]
        },
        "annotations": {"list": []},
        "links": [],
        "panels": panels,
    }


def main() -> None:
    """Write the dashboard JSON."""
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(build(), indent=2) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)} ({sum(1 for p in build()['panels'] if p['type'] != 'row')} panels)")


if __name__ == "__main__":
    main()
