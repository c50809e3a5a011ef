"""Small server-rendered SVG charts for the console (no JavaScript, no CDN)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

W, H, PAD_L, PAD_B, PAD_T, PAD_R = 640, 300, 96, 34, 14, 14


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    mag = 10 ** (len(str(int(value))) - 1) if value >= 1 else 1
    for m in (1, 2, 2.5, 5, 10):
        if value <= m * mag:
            return m * mag
    return value


def _axis(top: float, fmt: Callable[[float], str]) -> list[str]:
    out = []
    for i in range(5):
        v = top * i / 4
        y = H - PAD_B - (H - PAD_B - PAD_T) * i / 4
        out.append(
            f'<line x1="{PAD_L}" x2="{W - PAD_R}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
            f'<text x="{PAD_L - 6}" y="{y + 4:.1f}" text-anchor="end">{escape(fmt(v))}</text>'
        )
    return out


def bar_chart(
    labels: Sequence[str],
    values: Sequence[float],
    *,
    title: str,
    fmt: Callable[[float], str] = lambda v: f"{v:,.0f}",
    name: str = "",
) -> SafeString:
    """Bars, one per label (e.g. a day), with a y axis; each bar has a tooltip."""
    top = _nice_max(max(values, default=0))
    n = max(1, len(values))
    slot = (W - PAD_L - PAD_R) / n
    parts = [
        f'<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="{escape(title)}"'
        f' data-chart="{escape(name)}">'
    ]
    parts += _axis(top, fmt)
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        h = (H - PAD_B - PAD_T) * (value / top)
        x = PAD_L + i * slot + slot * 0.15
        parts.append(
            f'<rect x="{x:.1f}" y="{H - PAD_B - h:.1f}" width="{slot * 0.7:.1f}" height="{h:.1f}"'
            f' class="bar"><title>{escape(label)}: {escape(fmt(value))}</title></rect>'
        )
        if n <= 8 or i % max(1, -(-n // 6)) == 0:
            parts.append(
                f'<text x="{x + slot * 0.35:.1f}" y="{H - 8}" text-anchor="middle">'
                f"{escape(label[-5:])}</text>"
            )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every label and number is escaped above


def line_chart(
    series: Sequence[tuple[str, str, Sequence[tuple[float, float]]]],
    *,
    title: str,
    fmt_x: Callable[[float], str],
    fmt_y: Callable[[float], str],
    name: str = "",
) -> SafeString:
    """Lines ``(label, css class, [(x, y), …])`` sharing axes, with a legend."""
    xs = [x for _, _, pts in series for x, _ in pts] or [1.0]
    ys = [y for _, _, pts in series for _, y in pts] or [1.0]
    xmax, ymax = max(xs) or 1.0, _nice_max(max(ys))

    def px(x: float, y: float) -> str:
        return (
            f"{PAD_L + (W - PAD_L - PAD_R) * x / xmax:.1f},"
            f"{H - PAD_B - (H - PAD_B - PAD_T) * y / ymax:.1f}"
        )

    parts = [
        f'<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="{escape(title)}"'
        f' data-chart="{escape(name)}">'
    ]
    parts += _axis(ymax, fmt_y)
    for i in range(5):
        x = xmax * i / 4
        parts.append(
            f'<text x="{PAD_L + (W - PAD_L - PAD_R) * i / 4:.1f}" y="{H - 8}" '
            f'text-anchor="{"end" if i == 4 else "middle"}">{escape(fmt_x(x))}</text>'
        )
    for i, (label, css, pts) in enumerate(series):
        path = " ".join(px(float(x), float(y)) for x, y in pts)
        parts.append(f'<polyline points="{path}" class="line {escape(css)}"/>')
        parts.append(
            f'<text x="{PAD_L + 10}" y="{PAD_T + 18 + 22 * i}" class="legend {escape(css)}">'
            f"{escape(label)}</text>"
        )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every label and number is escaped above


def hbar_chart(
    labels: Sequence[str],
    values: Sequence[float],
    *,
    title: str,
    fmt: Callable[[float], str] = lambda v: f"{v:,.0f}",
    name: str = "",
    limit: int = 10,
) -> SafeString:
    """Horizontal bars, largest first, at most ``limit`` (the rest summed as "others")."""
    pairs = sorted(zip(labels, values, strict=True), key=lambda p: -p[1])
    if len(pairs) > limit:
        pairs = pairs[: limit - 1] + [("others", sum(v for _, v in pairs[limit - 1 :]))]
    row, label_w, value_w = 30, 240, 110
    height = max(1, len(pairs)) * row + 8
    top = max((v for _, v in pairs), default=0) or 1
    parts = [
        f'<svg class="chart" viewBox="0 0 {W} {height}" role="img" aria-label="{escape(title)}"'
        f' data-chart="{escape(name)}">'
    ]
    span = W - label_w - value_w - 10
    for i, (label, value) in enumerate(pairs):
        y = 4 + i * row
        w = span * value / top
        text = label if len(label) <= 24 else label[:23] + "…"
        parts.append(
            f'<text x="{label_w - 8}" y="{y + 19}" text-anchor="end">{escape(text)}</text>'
            f'<rect x="{label_w}" y="{y + 4}" width="{w:.1f}" height="{row - 8}" class="bar">'
            f"<title>{escape(label)}: {escape(fmt(value))}</title></rect>"
            f'<text x="{label_w + w + 6:.1f}" y="{y + 19}">{escape(fmt(value))}</text>'
        )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every label and number is escaped above
