"""The Grafana dashboard of docs/grafana-dashboard.json, rendered without Grafana.

Grafana is not installable on the machines this project is built on, so the screenshot in
docs/img/dashboard.png is this module's rendering: ``scrape`` saves /metrics pages of
running gateways every few seconds (during a load test), and ``render`` evaluates every
panel's queries of the dashboard JSON over those scrapes and plots them with matplotlib,
one subplot per panel, laid out by the panels' grid positions.

The evaluator knows the small part of PromQL the dashboard uses, and refuses the rest:
``histogram_quantile(q, v)``, ``sum|max|min|avg [by (labels)] (v)``, ``rate(s[w])``,
``increase(s[w])`` and selectors with ``=`` matchers. ``$__rate_interval`` becomes the
``--rate-interval`` given (Grafana makes it four scrape intervals at least). ``rate`` is the
counter's increase between the first and last scrape inside the window over their time
apart (resets handled), without Prometheus's extrapolation to the window's edges;
``increase`` is that rate times the window.

    python -m assistant.lab.dashboard scrape --url http://127.0.0.1:8765/metrics \\
        --every 2 --seconds 60 --out scrapes.jsonl
    python -m assistant.lab.dashboard render scrapes.jsonl --out docs/img/dashboard.png

docs/loadtest/dashboard-run.sh is the run behind docs/img/dashboard.png, and
docs/loadtest/dashboard-scrapes.jsonl.gz its scrapes.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import re
import textwrap
import time
import urllib.request
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json"

Labels = tuple[tuple[str, str], ...]  # sorted
Vector = dict[Labels, float]  # an instant vector: labels -> value


# PromQL, the dashboard's part of it ---------------------------------------------------------

_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d+(?:\.\d+)?)|(?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)"
    r'|(?P<str>"(?:[^"\\]|\\.)*")|(?P<range>\[[^\]]+\])|(?P<punct>[(){},=]))'
)
AGGREGATIONS = {"sum", "max", "min", "avg"}
FUNCTIONS = {"rate", "increase", "histogram_quantile"}


@dataclass(frozen=True)
class Selector:
    name: str
    matchers: tuple[tuple[str, str], ...] = ()
    range_s: str | None = None  # the text inside [...], if any


@dataclass(frozen=True)
class Call:
    function: str
    args: tuple[Node, ...]


@dataclass(frozen=True)
class Aggregate:
    op: str
    by: tuple[str, ...] | None  # None: everything into one series
    arg: Node


@dataclass(frozen=True)
class Number:
    value: float


Node = Selector | Call | Aggregate | Number


class QueryError(ValueError):
    """A query outside the part of PromQL this module evaluates."""


def _tokens(query: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    query = query.strip()
    while pos < len(query):
        match = _TOKEN.match(query, pos)
        if match is None or match.end() == pos:
            raise QueryError(f"cannot read {query[pos:]!r} of {query!r}")
        kind = match.lastgroup
        assert kind is not None
        out.append((kind, match.group(kind)))
        pos = match.end()
    return out


def parse(query: str) -> Node:
    """The query's tree; raises QueryError for anything outside the supported part."""
    tokens = _tokens(query)
    node, end = _expr(tokens, 0, query)
    if end != len(tokens):
        raise QueryError(f"trailing {tokens[end:]} in {query!r}")
    return node


def _expect(tokens: Sequence[tuple[str, str]], i: int, text: str, query: str) -> int:
    if i >= len(tokens) or tokens[i][1] != text:
        raise QueryError(f"expected {text!r} at token {i} of {query!r}")
    return i + 1


def _labels_list(tokens: Sequence[tuple[str, str]], i: int, query: str) -> tuple[list[str], int]:
    i = _expect(tokens, i, "(", query)
    names: list[str] = []
    while tokens[i][1] != ")":
        if tokens[i][0] != "ident":
            raise QueryError(f"a label name expected in {query!r}")
        names.append(tokens[i][1])
        i += 1
        if tokens[i][1] == ",":
            i += 1
    return names, i + 1


def _expr(tokens: Sequence[tuple[str, str]], i: int, query: str) -> tuple[Node, int]:
    if i >= len(tokens):
        raise QueryError(f"{query!r} ends too early")
    kind, text = tokens[i]
    if kind == "num":
        return Number(float(text)), i + 1
    if kind != "ident":
        raise QueryError(f"unexpected {text!r} in {query!r}")
    if text in AGGREGATIONS:
        by: tuple[str, ...] | None = None
        i += 1
        if tokens[i][1] == "by":
            names, i = _labels_list(tokens, i + 1, query)
            by = tuple(names)
        i = _expect(tokens, i, "(", query)
        arg, i = _expr(tokens, i, query)
        i = _expect(tokens, i, ")", query)
        return Aggregate(text, by, arg), i
    if text in FUNCTIONS:
        i = _expect(tokens, i + 1, "(", query)
        args: list[Node] = []
        while True:
            arg, i = _expr(tokens, i, query)
            args.append(arg)
            if tokens[i][1] == ",":
                i += 1
                continue
            break
        i = _expect(tokens, i, ")", query)
        return Call(text, tuple(args)), i
    if i + 1 < len(tokens) and tokens[i + 1][1] == "(":
        raise QueryError(f"function {text} is not supported ({query!r})")
    i += 1
    matchers: list[tuple[str, str]] = []
    if i < len(tokens) and tokens[i][1] == "{":
        i += 1
        while tokens[i][1] != "}":
            name = tokens[i][1]
            i = _expect(tokens, i + 1, "=", query)
            if tokens[i][0] != "str":
                raise QueryError(f"only = matchers with a quoted value ({query!r})")
            matchers.append((name, json.loads(tokens[i][1])))
            i += 1
            if tokens[i][1] == ",":
                i += 1
        i += 1
    range_s = None
    if i < len(tokens) and tokens[i][0] == "range":
        range_s = tokens[i][1][1:-1]
        i += 1
    return Selector(text, tuple(matchers), range_s), i


def metric_names(node: Node) -> set[str]:
    """The sample names a query reads."""
    if isinstance(node, Selector):
        return {node.name}
    if isinstance(node, Call):
        return set().union(*(metric_names(a) for a in node.args))
    if isinstance(node, Aggregate):
        return metric_names(node.arg)
    return set()


def panel_queries(dashboard: Mapping[str, Any]) -> list[tuple[Mapping[str, Any], str]]:
    """(panel, expr) of every target of every panel, rows' nested panels included."""
    out = []
    for panel in dashboard.get("panels", []):
        for inner in [panel, *panel.get("panels", [])]:
            for target in inner.get("targets", []):
                out.append((inner, str(target["expr"])))
    return out


def dashboard_metrics(dashboard: Mapping[str, Any]) -> set[str]:
    """Every sample name the dashboard's queries read; raises QueryError on a query this
    module cannot evaluate (so the rendering never silently skips a panel)."""
    names: set[str] = set()
    for _panel, expr in panel_queries(dashboard):
        names |= metric_names(parse(expr.replace("$__rate_interval", "1m")))
    return names


# evaluation over scrapes ------------------------------------------------------------------


@dataclass(frozen=True)
class Scrape:
    at: float  # seconds since the epoch
    series: dict[tuple[str, Labels], float]


def read_scrape(at: float, texts: Iterable[str]) -> Scrape:
    """One point in time from the /metrics pages of several gateways. A gateway's own
    series get its page's index as ``instance`` (as Prometheus would label them); a worker's
    series (``worker`` label), which every gateway relays, are counted once."""
    series: dict[tuple[str, Labels], float] = {}
    for index, text in enumerate(texts):
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = dict(sample.labels)
                if "worker" not in labels:
                    labels["instance"] = str(index)
                series[(sample.name, tuple(sorted(labels.items())))] = sample.value
    return Scrape(at, series)


def _seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text.strip())
    if match is None:
        raise QueryError(f"cannot read the range {text!r}")
    unit = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[match.group(2)]
    return float(match.group(1)) * unit


def _matches(selector: Selector, name: str, labels: Labels) -> bool:
    return name == selector.name and all((k, v) in labels for k, v in selector.matchers)


def _counter_rate(points: Sequence[tuple[float, float]]) -> float | None:
    if len(points) < 2 or points[-1][0] <= points[0][0]:
        return None
    increase, previous = 0.0, points[0][1]
    for _, v in points[1:]:
        increase += v - previous if v >= previous else v  # a reset starts from 0
        previous = v
    return increase / (points[-1][0] - points[0][0])


def _quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus's histogram_quantile over (upper bound, cumulative count) pairs."""
    buckets.sort()
    if len(buckets) < 2 or buckets[-1][1] <= 0:
        return math.nan
    total = buckets[-1][1]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound  # the highest finite bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return lower_bound


def _reduce(op: str, values: list[float]) -> float:
    if op == "sum":
        return float(sum(values))
    if op == "max":
        return max(values)
    if op == "min":
        return min(values)
    return float(sum(values)) / len(values)


def evaluate(node: Node, scrapes: Sequence[Scrape], index: int, rate_interval: str) -> Vector:
    """The query's instant vector at ``scrapes[index]``."""
    if isinstance(node, Number):
        return {(): node.value}
    if isinstance(node, Selector):
        if node.range_s is not None:
            raise QueryError(f"a range vector outside rate/increase: {node}")
        now = scrapes[index].series
        return {
            tuple(sorted(labels)): v
            for (name, labels), v in now.items()
            if _matches(node, name, labels)
        }
    if isinstance(node, Aggregate):
        groups: dict[Labels, list[float]] = defaultdict(list)
        for labels, v in evaluate(node.arg, scrapes, index, rate_interval).items():
            key = tuple((k, x) for k, x in labels if node.by is not None and k in node.by)
            groups[key].append(v)
        return {k: _reduce(node.op, vs) for k, vs in groups.items()}
    if node.function in ("rate", "increase"):
        (selector,) = node.args
        if not isinstance(selector, Selector) or selector.range_s is None:
            raise QueryError(f"{node.function} wants a range selector")
        window = _seconds(selector.range_s.replace("$__rate_interval", rate_interval))
        at = scrapes[index].at
        history: dict[Labels, list[tuple[float, float]]] = defaultdict(list)
        for scrape in scrapes[: index + 1]:
            if scrape.at < at - window:
                continue
            for (name, labels), v in scrape.series.items():
                if _matches(selector, name, labels):
                    history[labels].append((scrape.at, v))
        out: Vector = {}
        for labels, points in history.items():
            rate = _counter_rate(points)
            if rate is not None:
                out[labels] = rate * (window if node.function == "increase" else 1.0)
        return out
    # histogram_quantile
    q_node, vector_node = node.args
    if not isinstance(q_node, Number):
        raise QueryError("histogram_quantile wants a number first")
    by_series: dict[Labels, list[tuple[float, float]]] = defaultdict(list)
    for labels, v in evaluate(vector_node, scrapes, index, rate_interval).items():
        le = dict(labels).get("le")
        if le is None:
            continue
        rest = tuple((k, x) for k, x in labels if k != "le")
        by_series[rest].append((float(le), v))
    return {k: _quantile(q_node.value, b) for k, b in by_series.items()}


def legend(template: str, labels: Labels) -> str:
    found = dict(labels)
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: found.get(m.group(1), ""), template)


# scrape and render -------------------------------------------------------------------------


def scrape(urls: Sequence[str], every_s: float, seconds: float, out: Path) -> int:
    """Append one line per round ({"at": t, "pages": [text, ...]}) for ``seconds``."""
    rounds = 0
    deadline = time.time() + seconds
    with out.open("a") as sink:
        while time.time() < deadline:
            started = time.time()
            pages = []
            for url in urls:
                try:
                    with urllib.request.urlopen(url, timeout=5) as response:
                        pages.append(response.read().decode())
                except OSError:
                    continue
            sink.write(json.dumps({"at": started, "pages": pages}) + "\n")
            sink.flush()
            rounds += 1
            time.sleep(max(0.0, every_s - (time.time() - started)))
    return rounds


def load_scrapes(path: Path) -> list[Scrape]:
    """The scrapes of a file ``scrape`` wrote (gzipped too, when it ends in .gz)."""
    text = gzip.decompress(path.read_bytes()).decode() if path.suffix == ".gz" else path.read_text()
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    return [read_scrape(float(row["at"]), row["pages"]) for row in rows]


def render(
    dashboard: Mapping[str, Any],
    scrapes: Sequence[Scrape],
    out: Path,
    rate_interval: str = "10s",
    note: str = "",
) -> None:
    """Every panel of the dashboard as a subplot, placed by its gridPos; a PNG at ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [p for p in dashboard["panels"] if p.get("type") != "row"]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    note_lines = textwrap.wrap(note, 130)
    header = 0.5 + 0.3 * (1 + len(note_lines))  # inches above the panels for the title
    height = rows * 0.62 + header + 0.4
    figure = plt.figure(figsize=(16, height), facecolor="#111217")
    grid = figure.add_gridspec(
        rows, 24, hspace=3.2, wspace=1.2, top=1 - header / height, bottom=0.4 / height
    )
    start = scrapes[0].at
    times = [s.at - start for s in scrapes]
    for panel in panels:
        pos = panel["gridPos"]
        axes = figure.add_subplot(
            grid[pos["y"] : pos["y"] + pos["h"] - 1, pos["x"] : pos["x"] + pos["w"]]
        )
        axes.set_facecolor("#181b1f")
        axes.set_title(panel["title"], color="#ccccdc", fontsize=10, loc="left")
        axes.tick_params(colors="#9fa7b3", labelsize=8)
        for spine in axes.spines.values():
            spine.set_color("#2c3235")
        axes.grid(color="#2c3235", linewidth=0.6)
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
        if unit:
            axes.set_ylabel(unit, color="#9fa7b3", fontsize=8)
        for target in panel.get("targets", []):
            node = parse(target["expr"])
            lines: dict[Labels, list[float]] = defaultdict(lambda: [math.nan] * len(scrapes))
            for i in range(len(scrapes)):
                for labels, v in evaluate(node, scrapes, i, rate_interval).items():
                    lines[labels][i] = v
            for labels, values in sorted(lines.items()):
                axes.plot(
                    times,
                    values,
                    linewidth=1.6,
                    label=legend(target.get("legendFormat", ""), labels) or target["expr"][:40],
                )
        if axes.lines:
            axes.legend(fontsize=7, facecolor="#181b1f", labelcolor="#ccccdc", edgecolor="#2c3235")
        else:
            axes.text(0.5, 0.5, "no data", color="#9fa7b3", ha="center", transform=axes.transAxes)
        axes.set_xlim(times[0], times[-1])
        axes.set_xlabel("seconds into the scrape", color="#9fa7b3", fontsize=8)
    title = dashboard.get("title", "dashboard")
    figure.suptitle(
        f"{title} — rendered by assistant.lab.dashboard from /metrics scrapes, not Grafana"
        + "".join(f"\n{line}" for line in note_lines),
        color="#ccccdc",
        fontsize=12,
        y=1 - 0.15 / height,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=90, facecolor=figure.get_facecolor(), bbox_inches="tight")
    plt.close(figure)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m assistant.lab.dashboard", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    take = commands.add_parser("scrape", help="save /metrics pages every few seconds")
    take.add_argument("--url", action="append", required=True, help="a /metrics URL, repeatable")
    take.add_argument("--every", type=float, default=2.0, help="seconds between rounds (2)")
    take.add_argument("--seconds", type=float, default=60.0, help="how long (60)")
    take.add_argument("--out", type=Path, required=True, help="JSON lines file (appended)")
    draw = commands.add_parser("render", help="plot the dashboard's panels from scrapes")
    draw.add_argument("scrapes", type=Path)
    draw.add_argument("--dashboard", type=Path, default=DASHBOARD)
    draw.add_argument("--rate-interval", default="10s", help="what $__rate_interval is (10s)")
    draw.add_argument("--note", default="", help="a second title line (what ran)")
    draw.add_argument("--out", type=Path, required=True, help="PNG file")
    args = parser.parse_args(argv)
    if args.command == "scrape":
        rounds = scrape(args.url, args.every, args.seconds, args.out)
        print(f"{rounds} scrapes appended to {args.out}")
    else:
        dashboard = json.loads(args.dashboard.read_text())
        scrapes = load_scrapes(args.scrapes)
        render(dashboard, scrapes, args.out, args.rate_interval, args.note)
        print(f"{len(dashboard_metrics(dashboard))} metrics, {len(scrapes)} scrapes -> {args.out}")


if __name__ == "__main__":
    main()
