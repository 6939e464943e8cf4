"""The post-incident report's chart: a Gantt of every measure's intervals under the level line.

Hand-written SVG, deterministic (same report, same bytes): one row per measure with one
`<rect class="bar ...">` per interval it was in force, coloured by how the interval ended; above
them the incident's level as a step line; notifications as dots; stand-down and close as dashed
lines; a time axis in minutes, hours or days from the trigger; a legend. Colours are presentation
attributes, not a stylesheet, so the SVG looks the same as a file and inlined in a page.
"""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING

from core.timestamps import parse_utc

if TYPE_CHECKING:
    from engine.report import IncidentReport

WIDTH = 960
LABEL_W = 200
RIGHT = 28
PLOT_W = WIDTH - LABEL_W - RIGHT
ROW_H = 26
BAR_H = 14
LEVEL_GAP = 20
FONT = "Helvetica, Arial, sans-serif"

COLOURS = {
    "undone_at_stand_down": "#4e79a7",
    "undone": "#76b7b2",
    "expired": "#f28e2b",
    "withdrawn": "#b07aa1",
    "still_active": "#59a14f",
    "undo_failed": "#e15759",
    "restored_by_hand": "#9c755f",
    "lifted": "#bab0ac",
}
LEGEND = {
    "undone_at_stand_down": "in force, undone at stand-down",
    "undone": "in force, undone before stand-down",
    "expired": "in force, then lapsed (expired)",
    "withdrawn": "in force, withdrawn on de-escalation",
    "still_active": "still in force",
    "undo_failed": "undo failed (may still be in force)",
    "restored_by_hand": "in force, undo failed, then restored by hand",
    "lifted": "in force, then lifted by another incident's restore",
}
INK, MUTED, RULE, BAND = "#1d2430", "#5b6473", "#d5dae1", "#f4f6f8"
NOTICE = "#edc948"

# Tick spacings to choose from, in seconds: the smallest that gives at most MAX_TICKS ticks.
TICK_STEPS = (
    60,
    300,
    600,
    900,
    1800,
    3600,
    2 * 3600,
    3 * 3600,
    6 * 3600,
    12 * 3600,
    86400,
    2 * 86400,
    7 * 86400,
    14 * 86400,
    30 * 86400,
)
MAX_TICKS = 12


def human_duration(seconds: float | None) -> str:
    """`10s`, `7m 12s`, `2h 5m`, `2d 2h`: the two largest units, rounded to the second."""
    if seconds is None:
        return "—"
    total = round(seconds)
    sign, total = ("-" if total < 0 else ""), abs(total)
    if total < 60:
        return f"{sign}{total}s"
    parts = []
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    for value, unit in ((days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")):
        if value or parts:
            parts.append((value, unit))
    head, *tail = parts
    shown = [head] + [p for p in tail[:1] if p[0]]
    return sign + " ".join(f"{value}{unit}" for value, unit in shown)


def offset_label(seconds: float) -> str:
    """An offset from the trigger as `+HH:MM:SS`, or `+Nd HH:MM:SS` from a day on.

    Cut to the second, as a clock shows it: 14:59.6 after the trigger is still +00:14:59, so a
    notice sent just after a 15-minute deadline never reads as sent within it."""
    total = int(seconds)  # toward zero
    sign, total = ("-" if total < 0 else "+"), abs(total)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    clock = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{sign}{days}d {clock}" if days else f"{sign}{clock}"


def tick_label(seconds: int) -> str:
    """`0`, `+30m`, `+6h`, `+1d`, `+1d 6h`: a tick on the time axis."""
    if seconds == 0:
        return "0"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"+{days}d" + (f" {hours}h" if hours else "") + (f" {minutes}m" if minutes else "")
    if hours:
        return f"+{hours}h" + (f" {minutes}m" if minutes else "")
    return f"+{minutes}m"


def chart_filename(incident_id: str) -> str:
    """The file name the Markdown report expects its chart under, beside the .md."""
    return f"report-{incident_id}.svg"


def _n(value: float) -> str:
    """A coordinate with one decimal, without a trailing `.0`: stable text for stable output."""
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


def _e(text: object) -> str:
    return escape(str(text), quote=True)


def _clip(text: str, limit: int = 28) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render_chart_svg(report: IncidentReport) -> str:
    """The chart as SVG text (no XML declaration, so it can be inlined in HTML as is)."""
    facts = report.facts
    measures = report.measures
    span = max(
        [facts.duration_seconds, 1.0]
        + [i.end_offset_seconds for m in measures for i in m.intervals]
    )

    def x(seconds: float) -> float:
        return LABEL_W + max(0.0, min(seconds, span)) / span * PLOT_W

    levels = list(facts.levels)
    for change in facts.level_history:
        if change.level is not None and change.level not in levels:
            levels.append(change.level)
    has_levels = bool(levels) and bool(facts.level_history)

    body: list[str] = []
    top = 44
    plot_top = top
    # -- level lane: the most severe level on top
    if has_levels:
        lane_h = (len(levels) - 1) * LEVEL_GAP

        def y_level(level: str | None) -> float:
            rank = levels.index(level) if level in levels else 0
            return top + (len(levels) - 1 - rank) * LEVEL_GAP

        body.append(
            f'<text x="{LABEL_W - 8}" y="{_n(top - 14)}" text-anchor="end" fill="{MUTED}" '
            'font-weight="600">level</text>'
        )
        for level in levels:
            y = y_level(level)
            body.append(
                f'<line class="level-grid" x1="{LABEL_W}" y1="{_n(y)}" x2="{LABEL_W + PLOT_W}" '
                f'y2="{_n(y)}" stroke="{RULE}" stroke-dasharray="2 3"/>'
            )
            body.append(
                f'<text x="{LABEL_W - 8}" y="{_n(y + 4)}" text-anchor="end" fill="{INK}">'
                f"{_e(_clip(level))}</text>"
            )
        history = facts.level_history
        points = [f"M{_n(x(history[0].offset_seconds))},{_n(y_level(history[0].level))}"]
        for change in history[1:]:
            points.append(f"H{_n(x(change.offset_seconds))}")
            points.append(f"V{_n(y_level(change.level))}")
        points.append(f"H{_n(x(span))}")
        steps = "; ".join(
            f"{offset_label(c.offset_seconds)} {c.level} ({c.actor}: {c.reason})" for c in history
        )
        body.append(
            f'<path class="level-line" d="{" ".join(points)}" fill="none" stroke="{INK}" '
            f'stroke-width="2"><title>{_e("level: " + steps)}</title></path>'
        )
        top += lane_h + 28

    # -- one row per measure
    body.append(
        f'<text x="{LABEL_W - 8}" y="{_n(top - 8)}" text-anchor="end" fill="{MUTED}" '
        'font-weight="600">measures</text>'
    )
    rows_top = top
    for index, measure in enumerate(measures):
        y = rows_top + index * ROW_H
        if index % 2 == 0:
            body.append(
                f'<rect class="row-band" x="{LABEL_W}" y="{_n(y)}" width="{PLOT_W}" '
                f'height="{ROW_H}" fill="{BAND}"/>'
            )
        label = measure.step_id + ("" if measure.intervals else " (not applied)")
        body.append(
            f'<text x="{LABEL_W - 8}" y="{_n(y + ROW_H / 2 + 4)}" text-anchor="end" '
            f'fill="{INK if measure.intervals else MUTED}"><title>{_e(measure.step_id)}: '
            f"{_e(measure.outcome_text)}</title>{_e(_clip(label))}</text>"
        )
        for interval in measure.intervals:
            x0, x1 = x(interval.start_offset_seconds), x(interval.end_offset_seconds)
            tip = (
                f"{measure.step_id}: {offset_label(interval.start_offset_seconds)} → "
                f"{offset_label(interval.end_offset_seconds)} "
                f"({human_duration(interval.seconds)}), {LEGEND[interval.ended]}"
            )
            body.append(
                f'<rect class="bar bar-{interval.ended}" x="{_n(x0)}" '
                f'y="{_n(y + (ROW_H - BAR_H) / 2)}" width="{_n(max(x1 - x0, 1.5))}" '
                f'height="{BAR_H}" rx="2" fill="{COLOURS[interval.ended]}"'
                + (' fill-opacity="0.75"' if interval.open else "")
                + f"><title>{_e(tip)}</title></rect>"
            )
    top = rows_top + len(measures) * ROW_H

    # -- notifications, as dots on their own row
    if report.notifications:
        y = top + ROW_H / 2
        body.append(
            f'<text x="{LABEL_W - 8}" y="{_n(y + 4)}" text-anchor="end" fill="{INK}">'
            "notifications</text>"
        )
        for note in report.notifications:
            tip = f"{note.step_id}: told {note.to} at {offset_label(note.offset_seconds)}"
            body.append(
                f'<circle class="notice" cx="{_n(x(note.offset_seconds))}" cy="{_n(y)}" r="5" '
                f'fill="{NOTICE}" stroke="{INK}"><title>{_e(tip)}</title></circle>'
            )
            if note.closing_sent_at is not None:
                closing = (
                    parse_utc(note.closing_sent_at) - parse_utc(facts.triggered_at)
                ).total_seconds()
                tip = f"{note.step_id}: closing message at {offset_label(closing)}"
                body.append(
                    f'<circle class="notice notice-closing" cx="{_n(x(closing))}" cy="{_n(y)}" '
                    f'r="5" fill="#ffffff" stroke="{INK}"><title>{_e(tip)}</title></circle>'
                )
        top += ROW_H
    plot_bottom = top + 6

    # -- missed reviews: red triangles on the plot's top edge
    for review in report.reviews:
        if review.outcome != "missed":
            continue
        cx, cy = x(review.offset_seconds), plot_top - 26
        body.append(
            f'<path class="review-missed" d="M{_n(cx - 5)},{_n(cy)} H{_n(cx + 5)} '
            f'L{_n(cx)},{_n(cy + 8)} Z" fill="{COLOURS["undo_failed"]}">'
            f"<title>review missed at {offset_label(review.offset_seconds)}</title></path>"
        )

    # -- stand-down and close
    marks: list[tuple[str, float]] = []
    if report.key_figures.to_stand_down is not None:
        marks.append(("stand-down", report.key_figures.to_stand_down))
    if facts.closed_at is not None:
        marks.append(("closed", facts.duration_seconds))
    for index, (name, seconds) in enumerate(marks):
        mx = x(seconds)
        body.append(
            f'<line class="marker marker-{name}" x1="{_n(mx)}" y1="{_n(plot_top - 16)}" '
            f'x2="{_n(mx)}" y2="{_n(plot_bottom)}" stroke="{INK}" stroke-dasharray="4 3">'
            f"<title>{name} at {offset_label(seconds)}</title></line>"
        )
        body.append(
            f'<text x="{_n(mx - 4)}" y="{_n(plot_top - 18 - index * 11)}" text-anchor="end" '
            f'fill="{MUTED}" font-size="10">{name}</text>'
        )

    # -- time axis
    step = next((s for s in TICK_STEPS if span / s <= MAX_TICKS), TICK_STEPS[-1])
    axis: list[str] = [
        f'<line class="axis" x1="{LABEL_W}" y1="{_n(plot_bottom)}" x2="{LABEL_W + PLOT_W}" '
        f'y2="{_n(plot_bottom)}" stroke="{INK}"/>'
    ]
    tick = 0
    while tick <= span + 1e-9:
        tx = x(tick)
        axis.append(
            f'<line class="grid" x1="{_n(tx)}" y1="{_n(plot_top - 6)}" x2="{_n(tx)}" '
            f'y2="{_n(plot_bottom)}" stroke="{RULE}" stroke-width="0.5"/>'
        )
        axis.append(
            f'<line class="tick" x1="{_n(tx)}" y1="{_n(plot_bottom)}" x2="{_n(tx)}" '
            f'y2="{_n(plot_bottom + 5)}" stroke="{INK}"/>'
        )
        axis.append(
            f'<text class="tick-label" x="{_n(tx)}" y="{_n(plot_bottom + 18)}" '
            f'text-anchor="middle" fill="{INK}">{tick_label(tick)}</text>'
        )
        tick += step
    axis.append(
        f'<text x="{LABEL_W - 8}" y="{_n(plot_bottom + 18)}" text-anchor="end" fill="{MUTED}">'
        "time from trigger</text>"
    )
    top = plot_bottom + 40

    # -- legend: the kinds present, then the level line and the markers
    legend: list[str] = []
    items: list[tuple[str, str]] = []
    present = [k for k in COLOURS if any(i.ended == k for m in measures for i in m.intervals)]
    items += [(f"swatch-{k}", LEGEND[k]) for k in present]
    if has_levels:
        items.append(("level", "incident level"))
    if report.notifications:
        items.append(("notice", "notification sent"))
        if any(n.closing_sent_at for n in report.notifications):
            items.append(("closing", "closing message sent"))
    if any(r.outcome == "missed" for r in report.reviews):
        items.append(("missed", "review missed"))
    if marks:
        items.append(("marker", "stand-down / close"))
    lx, ly = LABEL_W, top
    for key, text in items:
        width = 26 + len(text) * 6.2
        if lx + width > WIDTH - RIGHT:
            lx, ly = LABEL_W, ly + 18
        if key.startswith("swatch-"):
            kind = key.removeprefix("swatch-")
            legend.append(
                f'<rect class="legend-swatch" x="{_n(lx)}" y="{_n(ly - 9)}" width="14" '
                f'height="10" rx="2" fill="{COLOURS[kind]}"/>'
            )
        elif key == "level":
            legend.append(
                f'<path d="M{_n(lx)},{_n(ly - 2)} H{_n(lx + 6)} V{_n(ly - 8)} H{_n(lx + 14)}" '
                f'fill="none" stroke="{INK}" stroke-width="2"/>'
            )
        elif key == "notice":
            legend.append(
                f'<circle cx="{_n(lx + 7)}" cy="{_n(ly - 4)}" r="5" fill="{NOTICE}" '
                f'stroke="{INK}"/>'
            )
        elif key == "closing":
            legend.append(
                f'<circle cx="{_n(lx + 7)}" cy="{_n(ly - 4)}" r="5" fill="#ffffff" stroke="{INK}"/>'
            )
        elif key == "missed":
            legend.append(
                f'<path d="M{_n(lx + 2)},{_n(ly - 9)} H{_n(lx + 12)} L{_n(lx + 7)},{_n(ly - 1)} Z" '
                f'fill="{COLOURS["undo_failed"]}"/>'
            )
        else:
            legend.append(
                f'<line x1="{_n(lx + 7)}" y1="{_n(ly - 11)}" x2="{_n(lx + 7)}" y2="{_n(ly + 1)}" '
                f'stroke="{INK}" stroke-dasharray="4 3"/>'
            )
        legend.append(f'<text x="{_n(lx + 20)}" y="{_n(ly)}" fill="{INK}">{_e(text)}</text>')
        lx += width
    height = ly + 16

    title = f"{facts.incident_id}: measures and level over time"
    head = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="incident-chart" width="{WIDTH}" '
        f'height="{_n(height)}" viewBox="0 0 {WIDTH} {_n(height)}" font-family="{FONT}" '
        f'font-size="11" role="img" aria-label="{_e(title)}">',
        f"<title>{_e(title)}</title>",
        f'<rect class="background" x="0" y="0" width="{WIDTH}" height="{_n(height)}" '
        'fill="#ffffff"/>',
        f'<text x="{LABEL_W}" y="16" fill="{INK}" font-size="13" font-weight="600">'
        f"{_e(title)}</text>",
    ]
    return "\n".join([*head, *axis, *body, *legend, "</svg>"]) + "\n"
