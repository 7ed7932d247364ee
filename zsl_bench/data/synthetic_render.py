"""Drawing one synthetic bird: attribute values in, RGB image and part locations out.

The object is drawn in its own frame (unit = body scale, x towards the bill, y down), at twice
the output resolution, then box-downsampled. Three spatial scales carry attributes: the whole
object (primary colour, body pattern, silhouette), mid-size parts (head, wing, tail) and small
parts (eye, bill, legs), so a method that only looks at coarse structure misses a third of them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

COLOURS = {
    "red": (196, 42, 38), "blue": (42, 86, 200), "yellow": (232, 204, 44), "green": (52, 158, 64),
    "brown": (128, 84, 46), "grey": (142, 142, 146), "black": (28, 28, 30), "white": (238, 238, 234),
    "orange": (238, 136, 30), "pink": (232, 142, 172),
}


@dataclass(frozen=True)
class AttributeGroup:
    """A CUB-style attribute group (`has_wing_color`), its part, kind and spatial scale."""
    name: str
    part: str
    kind: str    # "color" | "pattern" | "shape"
    scale: str   # "whole" | "mid" | "small"
    values: tuple[str, ...]


BODY_COLOURS = ("red", "blue", "yellow", "green", "brown", "grey")
GROUPS: tuple[AttributeGroup, ...] = (
    AttributeGroup("has_primary_color", "body", "color", "whole", BODY_COLOURS),
    AttributeGroup("has_body_pattern", "body", "pattern", "whole", ("solid", "striped", "spotted")),
    AttributeGroup("has_shape", "body", "shape", "whole", ("round", "elongated", "upright")),
    AttributeGroup("has_wing_color", "wing", "color", "mid", BODY_COLOURS),
    AttributeGroup("has_wing_shape", "wing", "shape", "mid", ("pointed", "rounded", "broad")),
    AttributeGroup("has_wing_pattern", "wing", "pattern", "mid", ("plain", "barred", "tipped")),
    AttributeGroup("has_head_color", "head", "color", "mid", BODY_COLOURS),
    AttributeGroup("has_tail_shape", "tail", "shape", "mid", ("forked", "fan", "pointed")),
    AttributeGroup("has_eye_color", "eye", "color", "small", ("red", "yellow", "black", "white")),
    AttributeGroup("has_eye_pattern", "eye", "pattern", "small", ("plain", "eyering", "eyeline")),
    AttributeGroup("has_bill_shape", "bill", "shape", "small", ("cone", "hooked", "needle")),
    AttributeGroup("has_bill_color", "bill", "color", "small", ("black", "orange", "yellow", "grey")),
    AttributeGroup("has_leg_color", "leg", "color", "small", ("black", "orange", "pink", "grey")),
)

# CUB numbers its parts in parts/parts.txt; these are ours, in that file's order.
PARTS = ("body", "head", "wing", "tail", "eye", "bill", "leg")


def _shade(rgb, factor: float):
    return tuple(int(np.clip(c * factor, 0, 255)) for c in rgb)


def _contrast(rgb):
    return COLOURS["white"] if sum(rgb) < 330 else COLOURS["black"]


class _Frame:
    """Object frame → supersampled canvas pixels (rotation, scale, translation)."""

    def __init__(self, centre, unit, angle):
        self.cx, self.cy = centre
        self.unit = unit
        self.cos, self.sin = np.cos(angle), np.sin(angle)

    def __call__(self, x, y):
        x, y = x * self.unit, y * self.unit
        return (self.cx + x * self.cos - y * self.sin, self.cy + x * self.sin + y * self.cos)

    def polygon(self, points):
        return [self(x, y) for x, y in points]

    def ellipse(self, cx, cy, rx, ry, n=28):
        t = np.linspace(0, 2 * np.pi, n, endpoint=False)
        return self.polygon(zip(cx + rx * np.cos(t), cy + ry * np.sin(t)))


def _jittered_colour(name, rng):
    base = np.array(COLOURS[name], dtype=float)
    return tuple(int(v) for v in np.clip(base * rng.uniform(0.85, 1.12) + rng.normal(0, 10, 3), 0, 255))


def _clutter(draw, rng, canvas, n):
    names = list(COLOURS)
    for _ in range(n):
        colour = _jittered_colour(names[rng.integers(len(names))], rng)
        x, y = rng.uniform(0, canvas, 2)
        r = rng.uniform(0.04, 0.16) * canvas
        kind = rng.integers(3)
        if kind == 0:
            draw.ellipse([x - r, y - r * rng.uniform(0.4, 1), x + r, y + r * rng.uniform(0.4, 1)], fill=colour)
        elif kind == 1:
            draw.rectangle([x - r, y - r / 2, x + r, y + r / 2], fill=colour)
        else:
            x2, y2 = rng.uniform(0, canvas, 2)
            draw.line([x, y, x2, y2], fill=colour, width=int(rng.integers(2, 6)))


# Long on purpose: one drawing in layers, background to foreground; splitting it would scatter the order.
def render(values: dict[str, str], rng: np.random.Generator, size: int, clutter: int = 6):
    """Draw one image. Returns (PIL RGB image of `size`×`size`, {part: (x, y, visible)}, bbox)."""
    ss = 2 * size
    v = values
    bg = np.array([rng.uniform(90, 200)] * 3) * 0.7 + rng.uniform(40, 220, 3) * 0.3
    img = Image.new("RGB", (ss, ss), tuple(int(c) for c in bg))
    draw = ImageDraw.Draw(img)
    # A soft horizon: backgrounds are not flat in photos either.
    horizon = rng.uniform(0.3, 0.9) * ss
    draw.rectangle([0, horizon, ss, ss], fill=_shade(tuple(int(c) for c in bg), rng.uniform(0.7, 1.2)))
    _clutter(draw, rng, ss, int(rng.integers(1, clutter + 1)))

    unit = ss * rng.uniform(0.75, 1.05)
    centre = (ss / 2 + rng.uniform(-0.12, 0.12) * ss, ss / 2 + rng.uniform(-0.1, 0.1) * ss)
    f = _Frame(centre, unit, rng.uniform(-0.25, 0.25))

    rx, ry = {"round": (0.27, 0.24), "elongated": (0.36, 0.17), "upright": (0.21, 0.3)}[v["has_shape"]]
    rx, ry = rx * rng.uniform(0.92, 1.08), ry * rng.uniform(0.92, 1.08)
    body_c = _jittered_colour(v["has_primary_color"], rng)
    wing_c = _jittered_colour(v["has_wing_color"], rng)
    head_c = _jittered_colour(v["has_head_color"], rng)
    leg_c = _jittered_colour(v["has_leg_color"], rng)
    bill_c = _jittered_colour(v["has_bill_color"], rng)
    eye_c = _jittered_colour(v["has_eye_color"], rng)

    # Legs and tail go behind the body. Small parts (legs, bill, eye) are sized to span one or two layer2 cells
    # of the extracted maps (stride 8 at 96 px) and a few percent of a layer4 cell: visible at a fine scale.
    leg_w = max(1, int(0.05 * unit))
    for dx in (-0.06, 0.06):
        draw.line([f(dx, ry * 0.8), f(dx + 0.02, ry + 0.17)], fill=leg_c, width=leg_w)
    tx = -rx * 0.9
    tail = {
        "forked": [(tx, -0.02), (tx - 0.28, -0.14), (tx - 0.18, 0.0), (tx - 0.28, 0.14), (tx, 0.04)],
        "fan": [(tx, 0.0)] + [(tx - 0.24 * np.cos(a), 0.24 * np.sin(a)) for a in np.linspace(-0.8, 0.8, 9)],
        "pointed": [(tx, -0.04), (tx - 0.36, 0.01), (tx, 0.05)],
    }[v["has_tail_shape"]]
    draw.polygon(f.polygon(tail), fill=wing_c)

    body = f.ellipse(0, 0, rx, ry)
    draw.polygon(body, fill=body_c)
    pattern = v["has_body_pattern"]
    if pattern != "solid":
        layer = Image.new("RGB", (ss, ss), _shade(body_c, 0.45))
        mask = Image.new("L", (ss, ss), 0)
        mdraw = ImageDraw.Draw(mask)
        if pattern == "striped":
            for x in np.arange(-rx, rx, 0.11):
                mdraw.polygon(f.polygon([(x, -ry), (x + 0.045, -ry), (x + 0.045, ry), (x, ry)]), fill=255)
        else:
            for _ in range(9):
                a, r = rng.uniform(0, 2 * np.pi), np.sqrt(rng.uniform(0, 0.8))
                mdraw.polygon(f.ellipse(r * rx * np.cos(a), r * ry * np.sin(a), 0.04, 0.04, 12), fill=255)
        clip = Image.new("L", (ss, ss), 0)
        ImageDraw.Draw(clip).polygon(body, fill=255)
        img.paste(layer, (0, 0), Image.fromarray(np.minimum(np.asarray(mask), np.asarray(clip))))
        draw = ImageDraw.Draw(img)

    wx, wy = -0.04, -0.02
    wing = {
        "pointed": [(wx + 0.12, wy - 0.08), (wx - 0.36, wy + 0.03), (wx + 0.04, wy + 0.1)],
        "rounded": None,
        "broad": [(wx + 0.14, wy - 0.1), (wx - 0.22, wy - 0.08), (wx - 0.26, wy + 0.08), (wx + 0.1, wy + 0.12)],
    }[v["has_wing_shape"]]
    wing_poly = f.polygon(wing) if wing else f.ellipse(wx - 0.03, wy, 0.18, 0.1)
    draw.polygon(wing_poly, fill=wing_c)
    if v["has_wing_pattern"] == "barred":
        for bx in (-0.02, -0.12):
            draw.line([f(wx + bx, wy - 0.07), f(wx + bx - 0.02, wy + 0.08)], fill=_contrast(wing_c),
                      width=max(1, int(0.03 * unit)))
    elif v["has_wing_pattern"] == "tipped":
        tip = min(wing_poly, key=lambda p: f.cos * p[0] + f.sin * p[1])  # the rearmost point
        r = 0.05 * unit
        draw.ellipse([tip[0] - r, tip[1] - r, tip[0] + r, tip[1] + r], fill=_contrast(wing_c))

    hx, hy, hr = rx * 0.85, -ry * 0.8, 0.13
    draw.polygon(f.ellipse(hx, hy, hr, hr), fill=head_c)
    bx = hx + hr * 0.9
    bill = {
        "cone": [(0, -0.05), (0.1, 0.01), (0, 0.05)],
        "hooked": [(0, -0.04), (0.09, -0.02), (0.1, 0.05), (0.06, 0.01), (0, 0.03)],
        "needle": [(0, -0.015), (0.2, 0.01), (0, 0.02)],
    }[v["has_bill_shape"]]
    draw.polygon(f.polygon([(bx + 1.5 * x, hy + 1.5 * y) for x, y in bill]), fill=bill_c)
    ex, ey = hx + 0.04, hy - 0.03
    if v["has_eye_pattern"] == "eyering":
        draw.polygon(f.ellipse(ex, ey, 0.09, 0.09, 16), fill=_contrast(head_c))
    elif v["has_eye_pattern"] == "eyeline":
        draw.line([f(hx - hr * 0.9, ey), f(hx + hr * 0.95, ey)], fill=_contrast(head_c), width=max(1, int(0.05 * unit)))
    draw.polygon(f.ellipse(ex, ey, 0.06, 0.06, 12), fill=eye_c)

    if rng.uniform() < 0.25:  # an occluder in front, as branches are in CUB photos
        _clutter(draw, rng, ss, 1)

    locs = {"body": f(0, 0), "head": f(hx, hy), "wing": f(wx - 0.05, wy), "tail": f(tx - 0.15, 0),
            "eye": f(ex, ey), "bill": f(bx + 0.075, hy), "leg": f(0, ry + 0.1)}
    outline = np.array(body + f.polygon(tail) + f.polygon([(bx + 1.5 * x, hy + 1.5 * y) for x, y in bill])
                       + [f(0, ry + 0.17)])
    bbox = (*outline.min(axis=0), *outline.max(axis=0))

    flip = rng.uniform() < 0.5
    if flip:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        locs = {k: (ss - x, y) for k, (x, y) in locs.items()}
        bbox = (ss - bbox[2], bbox[1], ss - bbox[0], bbox[3])
    img = img.reduce(2)
    pixels = np.asarray(img, dtype=np.int16) + rng.normal(0, 5, (size, size, 3)).astype(np.int16)
    img = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))

    half = lambda p: (p[0] / 2, p[1] / 2)  # noqa: E731 - supersampled → output pixels
    part_locs = {k: (*half(p), int(0 <= p[0] < ss and 0 <= p[1] < ss)) for k, p in locs.items()}
    x0, y0, x1, y1 = (np.clip(c / 2, 0, size - 1) for c in bbox)
    return img, part_locs, (float(x0), float(y0), float(x1 - x0), float(y1 - y0))
