"""How the report figures look: the canvas, colours, tick labels and label placement (matplotlib's
object API on the Agg canvas: no pyplot, no global backend)."""
from __future__ import annotations

import math
from pathlib import Path

DPI = 110
FONT = {"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "legend.fontsize": 10,
        "xtick.labelsize": 10, "ytick.labelsize": 10, "figure.titlesize": 12.5}


def curve_figsize(legend_labels: list[str]) -> tuple[float, float]:
    """Square axes plus a legend column as wide as the longest label."""
    return (round(max(10.5, 8.2 + 0.085 * max(map(len, legend_labels), default=0)), 2), 7.4)


def per_class_figsize(n_classes: int) -> tuple[float, float]:
    return (min(28.0, max(13.0, 5.0 + 0.42 * n_classes)), 7.0)


def attention_figsize(n_maps: int, n_images: int = 4) -> tuple[float, float]:
    return (1.4 + 2.9 * n_images, 1.6 + 3.0 * (n_maps + 1))


def pixels(figsize: tuple[float, float]) -> tuple[int, int]:
    """The PNG's width × height for a figure size (savefig without a tight bounding box; Agg truncates)."""
    return int(figsize[0] * DPI), int(figsize[1] * DPI)


def new_figure(figsize):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=DPI)
    tmp.replace(path)
    return path


def colours(methods: list[str]) -> dict[str, tuple]:
    from matplotlib import colormaps

    if len(methods) <= 10:
        return {m: colormaps["tab10"](i) for i, m in enumerate(methods)}
    order = [*range(0, 20, 2), *range(1, 20, 2)]   # tab20's dark shades first, then the light ones
    return {m: colormaps["tab20"](order[i % 20]) for i, m in enumerate(methods)}


def log_formatter(unit: str, minor: bool = False):
    """Log-axis tick labels in plain numbers with k/M (1, 2, 5 × 10^k on minor ticks)."""
    from matplotlib.ticker import FuncFormatter

    def fmt(v, _pos):
        if v <= 0:
            return ""
        mantissa = v / 10 ** math.floor(math.log10(v) + 1e-9)
        if minor and round(mantissa, 6) not in (2.0, 5.0):
            return ""
        for div, suffix in ((1e6, "M"), (1e3, "k")):
            if v >= div:
                return f"{v / div:g}{suffix}{unit}"
        return f"{v:g}{unit}"

    return FuncFormatter(fmt)


def seed_text(seeds) -> str:
    seeds = sorted(set(int(s) for s in seeds))
    return f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {', '.join(map(str, seeds))}"


# Label placement is one search over candidate offsets; it stays one function so the scoring of a
# candidate (overlaps, bounds, distance) reads in one place.
def place_labels(ax, xs, ys, texts, colours, xerr=None, yerr=None) -> None:
    """Label points, avoiding overlaps: offsets on growing rings around each point are tried nearest
    first; the first whose box covers no earlier label, marker or error bar and stays inside the axes
    wins (else the least covered one); a leader line when the label sits away from its point."""
    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    to_px = ax.transData.transform
    points = [tuple(to_px((x, y))) for x, y in zip(xs, ys)]
    marker = 6.0
    obstacles = [((px - marker, py - marker, px + marker, py + marker), 1.0) for px, py in points]
    for i, (x, y) in enumerate(zip(xs, ys)):   # error bars: thin obstacles, less bad to cross
        if yerr is not None and yerr[i] > 0:
            (_, lo), (_, hi) = to_px((x, y - yerr[i])), to_px((x, y + yerr[i]))
            obstacles.append(((points[i][0] - 2, lo, points[i][0] + 2, hi), 0.3))
        if xerr is not None and xerr[i] > 0:
            (lo, _), (hi, _) = to_px((max(x - xerr[i], x * 1e-3), y)), to_px((x + xerr[i], y))
            obstacles.append(((lo, points[i][1] - 2, hi, points[i][1] + 2), 0.3))
    scale = DPI / 72.0   # points → pixels
    candidates = [(8, 4), (8, -14), (-8, 4), (-8, -14)]
    for radius in (18, 30, 44, 60, 80):
        for angle in range(0, 360, 30):
            a = math.radians(angle)
            candidates.append((radius * math.cos(a), radius * math.sin(a) - 5))
    area = ax.bbox

    def overlap(a, b) -> float:
        return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))

    for i in sorted(range(len(xs)), key=lambda k: -points[k][1]):
        probe = ax.text(0, 0, texts[i], fontsize=10, fontweight="bold")
        box = probe.get_window_extent(renderer)
        probe.remove()
        w, h = box.width + 2, box.height + 2
        px, py = points[i]
        best, best_cost = None, math.inf
        for dx, dy in candidates:
            x0 = px + dx * scale if dx >= 0 else px + dx * scale - w
            rect = (x0, py + dy * scale, x0 + w, py + dy * scale + h)
            outside = w * h - overlap(rect, (area.x0, area.y0, area.x1, area.y1))
            cost = 3.0 * outside + sum(weight * overlap(rect, r) for r, weight in obstacles)
            if cost < best_cost:
                best, best_cost = (dx, dy, rect), cost
            if cost == 0:
                break
        dx, dy, rect = best
        obstacles.append((rect, 1.0))
        far = math.hypot(dx, dy) > 16
        text_colour = tuple(0.75 * c for c in colours[i][:3])   # a darker shade: light colours stay legible
        ax.annotate(texts[i], (xs[i], ys[i]), xytext=(dx, dy), textcoords="offset points", fontsize=10,
                    ha="left" if dx >= 0 else "right", va="bottom", color=text_colour, fontweight="bold",
                    arrowprops={"arrowstyle": "-", "color": colours[i], "lw": 0.8, "shrinkA": 0, "shrinkB": 5}
                    if far else None)
