"""Synthetic three-camera tabletop for the demo policy (numpy only).

World frame: robot base at the origin, x forward, y left, z up, table plane z = 0.
Everything random takes a `numpy.random.Generator`, so a seed fixes a scene, its
instruction, its start pose and its (optionally jittered) renders.

Parts:
- scenes: a tray and 3 to 5 items, each a distinct (colour, shape) pair
  (`sample_scene`);
- rendering: three fixed cameras "main", "side", "top"; painter's algorithm over
  convex faces and shaded discs (`render`, `object_mask`);
- language: English and Chinese instructions naming one item (`make_instruction`)
  and the character tokenizer of docs/POLICY_CONTRACT.md (`tokenize`);
- two tasks: reaching (every verb heads for the named item; the demo policies) and
  placement ("put" places the item on the named side of the tray, `placement_xyz`,
  with the tray's halves in each view from `tray_half_masks`);
- a 6-joint arm with analytic IK / FK (`ik`, `fk`), joint limits, random start poses
  and the expert action chunk (`expert_chunk`);
- `downsample`: the exact integer area average the Rust node applies to camera images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

# ----------------------------------------------------------------------------- world

#: Workspace in which item and tray centres are placed (metres, world frame).
WORKSPACE_X = (0.25, 0.65)
WORKSPACE_Y = (-0.30, 0.30)

COLOURS = ("red", "green", "blue", "yellow")
SHAPES = ("block", "cylinder", "ball")

#: Base RGB of each colour; far apart in hue so that a 5x area average keeps them apart.
COLOUR_RGB = {
    "red": (205, 40, 35),
    "green": (40, 165, 60),
    "blue": (40, 75, 210),
    "yellow": (230, 205, 40),
}
TRAY_RGB = (118, 102, 86)  # grey-brown
TABLE_RGB = (178, 172, 160)  # light warm grey: neutral against all four item colours
FLOOR_RGB = (92, 92, 98)  # plane z=0 beyond the table edge
WALL_RGB = (196, 204, 216)  # above the horizon in the angled views

BLOCK_SIZE = 0.05  # cube edge
CYL_RADIUS, CYL_HEIGHT = 0.025, 0.07
BALL_RADIUS = 0.03
TRAY_SIZE = (0.16, 0.12, 0.02)  # length (along its yaw), width, height
TABLE_EXTENT_X = (-0.05, 0.85)
TABLE_EXTENT_Y = (-0.60, 0.60)

#: Minimum distance between item centres. Items this far apart are at least one
#: 8-pixel patch apart in every 128x96 view, so "which item" is always decidable.
MIN_ITEM_SPACING = 0.10
#: Minimum gap between an item's footprint and the tray.
TRAY_CLEARANCE = 0.03

_FOOTPRINT = {
    "block": BLOCK_SIZE / 2 * math.sqrt(2.0),
    "cylinder": CYL_RADIUS,
    "ball": BALL_RADIUS,
}
_TOP = {"block": BLOCK_SIZE, "cylinder": CYL_HEIGHT, "ball": 2 * BALL_RADIUS}


@dataclass
class Item:
    colour: str
    shape: str
    x: float
    y: float
    yaw: float = 0.0

    @property
    def top(self) -> float:
        """Height of the item's top above the table."""
        return _TOP[self.shape]


@dataclass
class Scene:
    tray_xy: tuple[float, float]
    tray_yaw: float
    items: list[Item] = field(default_factory=list)


def _tray_distance(tray_xy, tray_yaw, x, y) -> float:
    """Distance from (x, y) to the tray's footprint rectangle (0 inside)."""
    c, s = math.cos(tray_yaw), math.sin(tray_yaw)
    dx, dy = x - tray_xy[0], y - tray_xy[1]
    u, v = c * dx + s * dy, -s * dx + c * dy
    ex = max(abs(u) - TRAY_SIZE[0] / 2, 0.0)
    ey = max(abs(v) - TRAY_SIZE[1] / 2, 0.0)
    return math.hypot(ex, ey)


def sample_scene(rng: np.random.Generator, n_items: int | None = None) -> Scene:
    """A tray and `n_items` (default 3 to 5) items with distinct (colour, shape),
    not overlapping each other and not on the tray."""
    if n_items is None:
        n_items = int(rng.integers(3, 6))
    if not 1 <= n_items <= len(COLOURS) * len(SHAPES):
        raise ValueError(f"n_items must be in 1..12, got {n_items}")
    combos = [(c, s) for c in COLOURS for s in SHAPES]
    while True:
        tray_xy = (
            float(rng.uniform(WORKSPACE_X[0] + 0.06, WORKSPACE_X[1] - 0.06)),
            float(rng.uniform(WORKSPACE_Y[0] + 0.06, WORKSPACE_Y[1] - 0.06)),
        )
        tray_yaw = float(rng.uniform(-0.5, 0.5))
        picks = rng.choice(len(combos), size=n_items, replace=False)
        items: list[Item] = []
        for k in picks:
            colour, shape = combos[int(k)]
            for _ in range(200):
                x = float(rng.uniform(*WORKSPACE_X))
                y = float(rng.uniform(*WORKSPACE_Y))
                if _tray_distance(tray_xy, tray_yaw, x, y) < _FOOTPRINT[shape] + TRAY_CLEARANCE:
                    continue
                if any(math.hypot(x - o.x, y - o.y) < MIN_ITEM_SPACING for o in items):
                    continue
                items.append(Item(colour, shape, x, y, float(rng.uniform(-math.pi, math.pi))))
                break
            else:
                break  # crowded: start again with a new tray
        if len(items) == n_items:
            return Scene(tray_xy, tray_yaw, items)


# ---------------------------------------------------------------------------- cameras


@dataclass(frozen=True)
class Camera:
    position: tuple[float, float, float]
    look_at: tuple[float, float, float]
    up: tuple[float, float, float]
    #: focal length in units of the image width (so any resolution sees the same view)
    focal: float

    def rotation(self) -> np.ndarray:
        """Rows: camera right, down, forward, in world coordinates."""
        return _rotation(self)


@lru_cache(maxsize=None)
def _rotation(cam: "Camera") -> np.ndarray:
    f = np.asarray(cam.look_at, float) - np.asarray(cam.position, float)
    f /= np.linalg.norm(f)
    r = np.cross(f, np.asarray(cam.up, float))
    r /= np.linalg.norm(r)
    d = np.cross(f, r)
    R = np.stack([r, d, f])
    R.flags.writeable = False  # shared by every caller through the cache
    return R


#: "main": over the robot's shoulder, looking forward and down at the table;
#: "side": from the robot's right, looking across the table; "top": straight down,
#: image up = world +x (forward).
CAMERAS: dict[str, Camera] = {
    "main": Camera((0.0, 0.0, 0.55), (0.47, 0.0, 0.0), (0.0, 0.0, 1.0), 0.78),
    "side": Camera((0.45, -0.68, 0.36), (0.45, 0.0, 0.0), (0.0, 0.0, 1.0), 0.85),
    "top": Camera((0.45, 0.0, 0.62), (0.45, 0.0, 0.0), (1.0, 0.0, 0.0), 0.75),
}
CAMERA_NAMES = ("main", "side", "top")

_LIGHT = np.array([0.35, -0.25, 1.0]) / np.linalg.norm([0.35, -0.25, 1.0])
_AMBIENT, _DIFFUSE = 0.45, 0.60


def _camera(name: str) -> Camera:
    try:
        return CAMERAS[name]
    except KeyError:
        raise ValueError(f"unknown camera {name!r}; expected one of {CAMERA_NAMES}") from None


def project(points: np.ndarray, camera_name: str, width: int = 640, height: int = 480):
    """World points [N, 3] -> (pixel coordinates [N, 2] as (u, v), depth [N]).
    Pixel (row i, column j) covers u in [j, j+1), v in [i, i+1)."""
    cam = _camera(camera_name)
    R = cam.rotation()
    pc = (np.asarray(points, float) - np.asarray(cam.position)) @ R.T
    fpx = cam.focal * width
    z = pc[:, 2]
    uv = np.stack([fpx * pc[:, 0] / z + width / 2, fpx * pc[:, 1] / z + height / 2], axis=1)
    return uv, z


_BG_CACHE: dict[tuple[str, int, int], tuple[np.ndarray, np.ndarray]] = {}
_NOISE_BANK: np.ndarray | None = None


def _pixel_rays(camera_name: str, width: int, height: int) -> np.ndarray:
    """[height, width, 3]: each pixel centre's ray direction in world axes (unit depth
    along the camera's forward axis)."""
    cam = _camera(camera_name)
    fpx = cam.focal * width
    jj, ii = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    return np.stack([(jj - width / 2) / fpx, (ii - height / 2) / fpx, np.ones_like(jj)], -1) @ cam.rotation()


def _background(camera_name: str, width: int, height: int):
    """Table / floor / wall image and its label map (-1 background), cached."""
    key = (camera_name, width, height)
    if key in _BG_CACHE:
        return _BG_CACHE[key]
    rays = _pixel_rays(camera_name, width, height)
    pos = np.asarray(_camera(camera_name).position)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = -pos[2] / rays[..., 2]
    hits = t > 0
    px = pos[0] + t * rays[..., 0]
    py = pos[1] + t * rays[..., 1]
    on_table = (
        hits
        & (px >= TABLE_EXTENT_X[0])
        & (px <= TABLE_EXTENT_X[1])
        & (py >= TABLE_EXTENT_Y[0])
        & (py <= TABLE_EXTENT_Y[1])
    )
    img = np.empty((height, width, 3), np.float64)
    img[:] = WALL_RGB
    img[hits] = FLOOR_RGB
    # Table: its colour, lit by the same light, with a fixed mild grain.
    grain = np.random.default_rng(1234).normal(0.0, 4.0, size=(height, width))
    table = np.asarray(TABLE_RGB, float) * (_AMBIENT + _DIFFUSE * _LIGHT[2]) / (_AMBIENT + _DIFFUSE)
    img[on_table] = table + grain[on_table, None]
    out = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    labels = np.full((height, width), -1, np.int16)
    _BG_CACHE[key] = (out, labels)
    return out, labels


def _shade(rgb, normal) -> np.ndarray:
    k = _AMBIENT + _DIFFUSE * max(0.0, float(np.dot(normal, _LIGHT)))
    return np.clip(np.rint(np.asarray(rgb, float) * k), 0, 255).astype(np.uint8)


def _fill_convex(img, labels, poly, colour, label):
    """Fill the convex polygon `poly` [N, 2] (pixel coords) within its bounding box."""
    h, w = labels.shape
    u0 = max(int(math.floor(poly[:, 0].min())), 0)
    u1 = min(int(math.ceil(poly[:, 0].max())), w)
    v0 = max(int(math.floor(poly[:, 1].min())), 0)
    v1 = min(int(math.ceil(poly[:, 1].max())), h)
    if u0 >= u1 or v0 >= v1:
        return
    a = poly
    b = np.roll(poly, -1, axis=0)
    e = b - a
    area = float(np.sum(a[:, 0] * b[:, 1] - b[:, 0] * a[:, 1]))
    if abs(area) < 1e-9:
        return
    if area < 0:  # make the winding positive: inside is left of every edge
        e = -e
    xs = np.arange(u0, u1) + 0.5
    ys = np.arange(v0, v1) + 0.5
    # cross[k, i, j] = e_k x (p_ij - a_k), all edges at once
    cross = (e[:, 0, None] * (ys[None, :] - a[:, 1, None]))[:, :, None] - (
        e[:, 1, None] * (xs[None, :] - a[:, 0, None])
    )[:, None, :]
    inside = (cross >= 0).all(axis=0)
    img[v0:v1, u0:u1][inside] = colour
    labels[v0:v1, u0:u1][inside] = label


def _convex_hull(pts: np.ndarray) -> np.ndarray:
    """Monotone chain convex hull of 2-D points."""
    p = sorted(map(tuple, pts))
    if len(p) <= 2:
        return np.asarray(p)

    def half(seq):
        out = []
        for q in seq:
            while len(out) >= 2 and (
                (out[-1][0] - out[-2][0]) * (q[1] - out[-2][1])
                - (out[-1][1] - out[-2][1]) * (q[0] - out[-2][0])
            ) <= 0:
                out.pop()
            out.append(q)
        return out

    lower, upper = half(p), half(reversed(p))
    return np.asarray(lower[:-1] + upper[:-1])


def _draw_prism(img, labels, cam_name, base_xy, yaw, footprint, height, rgb, label, w, h):
    """A vertical prism: `footprint` [K, 2] (counter-clockwise, object frame) extruded
    from z=0 to `height`. Draws the faces that face the camera, each flat-shaded."""
    c, s = math.cos(yaw), math.sin(yaw)
    fp = footprint @ np.array([[c, s], [-s, c]]) + np.asarray(base_xy)
    k = len(fp)
    bottom = np.column_stack([fp, np.zeros(k)])
    top = np.column_stack([fp, np.full(k, height)])
    uv_b, _ = project(bottom, cam_name, w, h)
    uv_t, _ = project(top, cam_name, w, h)
    cam_pos = np.asarray(_camera(cam_name).position)
    faces = []
    for a in range(k):
        b = (a + 1) % k
        edge = fp[b] - fp[a]
        normal = np.array([edge[1], -edge[0], 0.0])
        normal /= np.linalg.norm(normal)
        mid = np.array([*(fp[a] + fp[b]) / 2, height / 2])
        if np.dot(normal, mid - cam_pos) < 0:
            poly = np.array([uv_b[a], uv_b[b], uv_t[b], uv_t[a]])
            faces.append((np.dot(mid - cam_pos, mid - cam_pos), poly, normal))
    # Side faces of a convex prism never overlap each other; the top covers them.
    for _, poly, normal in sorted(faces, key=lambda f: -f[0]):
        _fill_convex(img, labels, poly, _shade(rgb, normal), label)
    if cam_pos[2] > height:
        _fill_convex(img, labels, uv_t, _shade(rgb, np.array([0.0, 0.0, 1.0])), label)


_SQUARE = np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]])
_CIRCLE16 = np.stack(
    [np.cos(np.arange(16) * 2 * np.pi / 16), np.sin(np.arange(16) * 2 * np.pi / 16)], 1
)


def _draw_ball(img, labels, cam_name, centre, radius, rgb, label, w, h):
    cam = _camera(cam_name)
    R = cam.rotation()
    uv, z = project(centre[None, :], cam_name, w, h)
    d = float(np.linalg.norm(centre - np.asarray(cam.position)))
    rpx = cam.focal * w * radius / math.sqrt(max(d * d - radius * radius, 1e-9))
    cu, cv = uv[0]
    u0, u1 = max(int(cu - rpx), 0), min(int(math.ceil(cu + rpx)) + 1, w)
    v0, v1 = max(int(cv - rpx), 0), min(int(math.ceil(cv + rpx)) + 1, h)
    if u0 >= u1 or v0 >= v1 or z[0] <= 0:
        return
    dx = (np.arange(u0, u1) + 0.5 - cu)[None, :] / rpx
    dy = (np.arange(v0, v1) + 0.5 - cv)[:, None] / rpx
    r2 = dx * dx + dy * dy
    inside = r2 <= 1.0
    nz = np.sqrt(np.clip(1.0 - r2, 0.0, 1.0))
    light_cam = R @ _LIGHT  # light direction in camera axes (right, down, forward)
    lam = np.clip(dx * light_cam[0] + dy * light_cam[1] - nz * light_cam[2], 0.0, None)
    k = _AMBIENT + _DIFFUSE * lam
    shaded = np.clip(np.rint(np.asarray(rgb, float)[None, None, :] * k[..., None]), 0, 255)
    img[v0:v1, u0:u1][inside] = shaded[inside]
    labels[v0:v1, u0:u1][inside] = label


def _rasterize(scene: Scene, camera_name: str, width: int, height: int):
    """(RGB uint8 [H, W, 3], labels [H, W]): label i for item i, -2 tray, -1 rest."""
    bg, bg_labels = _background(camera_name, width, height)
    img = bg.copy()
    labels = bg_labels.copy()
    cam_pos = np.asarray(_camera(camera_name).position)
    drawables = []
    tc = np.array([scene.tray_xy[0], scene.tray_xy[1], TRAY_SIZE[2] / 2])
    drawables.append((np.linalg.norm(tc - cam_pos), -2, None))
    for i, it in enumerate(scene.items):
        c = np.array([it.x, it.y, it.top / 2])
        drawables.append((np.linalg.norm(c - cam_pos), i, it))
    # Painter's algorithm: farthest first.
    for _, label, it in sorted(drawables, key=lambda d: -d[0]):
        if it is None:
            fp = _SQUARE * np.array([TRAY_SIZE[0], TRAY_SIZE[1]])
            _draw_prism(img, labels, camera_name, scene.tray_xy, scene.tray_yaw, fp,
                        TRAY_SIZE[2], TRAY_RGB, label, width, height)
        elif it.shape == "block":
            _draw_prism(img, labels, camera_name, (it.x, it.y), it.yaw, _SQUARE * BLOCK_SIZE,
                        BLOCK_SIZE, COLOUR_RGB[it.colour], label, width, height)
        elif it.shape == "cylinder":
            _draw_prism(img, labels, camera_name, (it.x, it.y), 0.0, _CIRCLE16 * CYL_RADIUS,
                        CYL_HEIGHT, COLOUR_RGB[it.colour], label, width, height)
        else:
            _draw_ball(img, labels, camera_name, np.array([it.x, it.y, BALL_RADIUS]),
                       BALL_RADIUS, COLOUR_RGB[it.colour], label, width, height)
    return img, labels


def _noise_bank() -> np.ndarray:
    global _NOISE_BANK
    if _NOISE_BANK is None:
        _NOISE_BANK = np.random.default_rng(99).normal(0.0, 1.0, (1024, 1024)).astype(np.float32)
    return _NOISE_BANK


def render(scene: Scene, camera_name: str, width: int = 640, height: int = 480,
           rng: np.random.Generator | None = None) -> np.ndarray:
    """RGB uint8 [height, width, 3] view of `scene` from camera `camera_name`.
    With `rng`, a small random brightness / colour gain and pixel noise are applied
    (for training robustness); without it the render is fully deterministic."""
    img, _ = _rasterize(scene, camera_name, width, height)
    if rng is None:
        return img
    gain = (rng.uniform(0.88, 1.12) * rng.uniform(0.96, 1.04, size=3)).astype(np.float32)
    out = img.astype(np.float32)
    out *= gain
    bank = _noise_bank()
    if height <= bank.shape[0] and width <= bank.shape[1]:
        oy = int(rng.integers(0, bank.shape[0] - height + 1))
        ox = int(rng.integers(0, bank.shape[1] - width + 1))
        out += float(rng.uniform(1.0, 5.0)) * bank[oy:oy + height, ox:ox + width, None]
    out += 0.5
    np.clip(out, 0, 255, out=out)
    return out.astype(np.uint8)


def object_mask(scene: Scene, obj_index: int, camera_name: str, width: int = 640,
                height: int = 480) -> np.ndarray:
    """Bool [height, width]: the pixels where item `obj_index` is visible."""
    if not 0 <= obj_index < len(scene.items):
        raise IndexError(f"obj_index {obj_index} out of range for {len(scene.items)} items")
    _, labels = _rasterize(scene, camera_name, width, height)
    return labels == obj_index


def downsample(img: np.ndarray, factor: int) -> np.ndarray:
    """Integer area average: each output pixel is (sum + n//2) // n over its
    factor x factor block, per channel (n = factor^2). The Rust node does exactly this."""
    h, w = img.shape[:2]
    if h % factor or w % factor:
        raise ValueError(f"image {w}x{h} is not divisible by {factor}")
    n = factor * factor
    # Strided adds instead of reshape().sum(axis=(1, 3)): same integers, 20x faster.
    rows = img[0::factor].astype(np.uint32)
    for k in range(1, factor):
        rows += img[k::factor]
    s = rows[:, 0::factor].copy()
    for k in range(1, factor):
        s += rows[:, k::factor]
    s += n // 2
    s //= n
    return s.astype(np.uint8)

# --------------------------------------------------------------------------- language

ZH_COLOURS = {"red": "红色", "green": "绿色", "blue": "蓝色", "yellow": "黄色"}
ZH_SHAPES = {"block": "方块", "cylinder": "圆柱体", "ball": "球"}
VERBS = ("move_above", "pick", "put")
#: The halves of the tray a "put" instruction names, as the robot sees them (+y left).
SIDES = ("left", "right")
ZH_SIDES = {"left": "左侧", "right": "右侧"}
TEMPLATES = {
    "en": {
        "move_above": "move above the {c} {s}",
        "pick": "pick up the {c} {s}",
        "put": "put the {c} {s} on the {side} side of the tray",
    },
    "zh": {
        "move_above": "移动到{c}{s}正上方",
        "pick": "抓起{c}{s}",
        "put": "把{c}{s}放到托盘{side}",
    },
}
MAX_TOKENS = 64
#: Characters of the placement task that the reaching task's vocabulary lacks. They are
#: kept out of VOCAB (whose size sets the demo policies' embedding, so a change would
#: change what their training scripts produce) and appended in PLACE_TOKENIZER_META.
_PLACE_CHARS = "左"


def _build_vocab() -> str:
    chars = set("abcdefghijklmnopqrstuvwxyz0123456789 .,;:!?'\"-()")
    for lang, temps in TEMPLATES.items():
        for t in temps.values():
            chars.update(t.replace("{c}", "").replace("{s}", "").replace("{side}", ""))
    for word in (*ZH_COLOURS.values(), *ZH_SHAPES.values(), *ZH_SIDES.values(), *COLOURS, *SHAPES, *SIDES):
        chars.update(word)
    chars -= set(_PLACE_CHARS)
    ascii_part = sorted(c for c in chars if ord(c) < 128)
    other = sorted(c for c in chars if ord(c) >= 128)
    return "".join(ascii_part + other)


VOCAB = _build_vocab()
TOKENIZER_META = {
    "type": "char",
    "vocab": VOCAB,
    "max_length": MAX_TOKENS,
    "pad_id": 0,
    "unk_id": 1,
    "lowercase": True,
}
#: The placement task's tokenizer: VOCAB with the characters of "left" in Chinese.
PLACE_TOKENIZER_META = {**TOKENIZER_META, "vocab": VOCAB + _PLACE_CHARS}


def instruction_text(colour: str, shape: str, verb: str, lang: str, side: str = "right") -> str:
    """The instruction naming an item; `side` is the tray's half a "put" names (the
    reaching task's "put" always says "right")."""
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    if lang == "zh":
        return TEMPLATES["zh"][verb].format(c=ZH_COLOURS[colour], s=ZH_SHAPES[shape], side=ZH_SIDES[side])
    return TEMPLATES["en"][verb].format(c=colour, s=shape, side=side)


def make_instruction(scene: Scene, item_index: int, rng: np.random.Generator,
                     lang: str | None = None) -> tuple[str, str]:
    """(text, verb) naming item `item_index` by colour and shape. `lang` is "en", "zh"
    or None (either, at random); the verb is one of VERBS, at random."""
    if lang is None:
        lang = ("en", "zh")[int(rng.integers(0, 2))]
    if lang not in TEMPLATES:
        raise ValueError(f"lang must be 'en' or 'zh', got {lang!r}")
    verb = VERBS[int(rng.integers(0, len(VERBS)))]
    it = scene.items[item_index]
    return instruction_text(it.colour, it.shape, verb, lang), verb


def word_spans(text: str, colour: str, shape: str) -> list[tuple[int, int]]:
    """Token index ranges [start, end) of the colour word and of the shape word in an
    instruction made by `instruction_text` (after the tokenizer's strip)."""
    t = text.strip().lower()
    spans = []
    for w in (colour, ZH_COLOURS[colour], shape, ZH_SHAPES[shape]):
        k = t.find(w)
        if k >= 0:
            spans.append((k, k + len(w)))
    return spans


def side_span(text: str, side: str) -> tuple[int, int]:
    """Token index range [start, end) of the side word ("left" / "right", 左侧 / 右侧)
    in a "put" instruction made by `instruction_text`."""
    t = text.strip().lower()
    k = t.find(f" {side} ")  # between spaces: a whole English word
    if k >= 0:
        return k + 1, k + 1 + len(side)
    k = t.find(ZH_SIDES[side])
    if k >= 0:
        return k, k + len(ZH_SIDES[side])
    raise ValueError(f"no {side!r} in {text!r}")


def tokenize(text: str, tokenizer_meta: dict = TOKENIZER_META) -> tuple[np.ndarray, np.ndarray]:
    """(ids int64 [L], mask bool [L]) as docs/POLICY_CONTRACT.md: strip, lower-case
    ASCII letters, one token per Unicode scalar (2 + vocab index, else unk_id), cut at
    max_length, pad with pad_id."""
    vocab = tokenizer_meta["vocab"]
    L = int(tokenizer_meta["max_length"])
    pad, unk = int(tokenizer_meta["pad_id"]), int(tokenizer_meta["unk_id"])
    s = text.strip()
    if tokenizer_meta.get("lowercase", True):
        s = "".join(c.lower() if "A" <= c <= "Z" else c for c in s)
    index = {c: i for i, c in enumerate(vocab)}
    toks = [2 + index[c] if c in index else unk for c in s][:L]
    ids = np.full(L, pad, np.int64)
    mask = np.zeros(L, bool)
    ids[: len(toks)] = toks
    mask[: len(toks)] = True
    return ids, mask


# -------------------------------------------------------------------------------- arm

JOINT_NAMES = ["shoulder_pan", "shoulder_lift", "elbow", "wrist_pitch", "wrist_roll", "gripper"]
#: Shoulder height above the base, upper arm, forearm, wrist-pitch axis to tool tip.
#: Reach from the shoulder to the wrist is 0.87 m; the farthest wrist point needed
#: (workspace corner, 0.35 m above the table plus the tool) is about 0.80 m away.
SHOULDER_HEIGHT, L_UPPER, L_FORE, L_TOOL = 0.12, 0.45, 0.42, 0.12
GRIPPER_OPEN = 0.04
#: Joint limits (rad; metres for the gripper). Every instruction target and start
#: pose (noise included; 40k sampled) lies in pan [-0.98, 0.98], lift [0.66, 2.0],
#: elbow [-2.55, -0.83], wrist_pitch [-1.66, -0.38], wrist_roll [-0.22, 0.22],
#: gripper [0, 0.04]; each arm-joint limit leaves at least 0.5 rad of margin, the
#: gripper's are its travel (0 closed).
JOINT_LOWER = np.array([-1.6, 0.0, -3.1, -2.4, -1.0, 0.0])
JOINT_UPPER = np.array([1.6, 2.6, 0.0, 0.4, 1.0, 0.06])
CONTROL_RATE_HZ = 50.0
CHUNK_LENGTH = 25
RAMP_TAU = 8.0


def ik(xyz) -> np.ndarray:
    """Joint vector [6] putting the tool tip at `xyz` [3] with the tool vertical
    (pointing down), elbow up, wrist_roll 0, gripper open. Also takes [..., 3]
    and returns [..., 6]."""
    p = np.asarray(xyz, float)
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    pan = np.arctan2(y, x)
    r = np.hypot(x, y)
    dz = z + L_TOOL - SHOULDER_HEIGHT  # wrist point relative to the shoulder
    c2 = (r * r + dz * dz - L_UPPER**2 - L_FORE**2) / (2 * L_UPPER * L_FORE)
    if np.any(np.abs(c2) > 1.0):
        raise ValueError(f"target {xyz} is out of reach")
    elbow = -np.arccos(c2)  # negative: forearm bends down, elbow above the line
    lift = np.arctan2(dz, r) - np.arctan2(L_FORE * np.sin(elbow), L_UPPER + L_FORE * np.cos(elbow))
    pitch = -np.pi / 2 - lift - elbow  # tool absolute angle -90 deg: pointing down
    return np.stack(
        [pan, lift, elbow, pitch, np.zeros_like(pan), np.full_like(pan, GRIPPER_OPEN)], axis=-1
    )


def fk(q) -> np.ndarray:
    """Tool tip position [3] of joint vector `q` (also works on [..., 6] arrays)."""
    q = np.asarray(q, float)
    pan, a1 = q[..., 0], q[..., 1]
    a2 = a1 + q[..., 2]
    a3 = a2 + q[..., 3]
    r = L_UPPER * np.cos(a1) + L_FORE * np.cos(a2) + L_TOOL * np.cos(a3)
    z = SHOULDER_HEIGHT + L_UPPER * np.sin(a1) + L_FORE * np.sin(a2) + L_TOOL * np.sin(a3)
    return np.stack([r * np.cos(pan), r * np.sin(pan), z], axis=-1)


def target_xyz(scene: Scene, item_index: int, verb: str, side: str | None = None) -> np.ndarray:
    """Where the chunk heads: above the item (+0.10 m) for "move_above", its top for
    "pick"; for "put", its top in the reaching task (`side` None: the chunk is the
    approach phase) and, in the placement task, the placement point of the named side
    of the tray (`placement_xyz`)."""
    it = scene.items[item_index]
    if verb == "put" and side is not None:
        return placement_xyz(scene, item_index, side)
    z = it.top + (0.10 if verb == "move_above" else 0.0)
    return np.array([it.x, it.y, z])


#: Placement points lie this far from the tray's midline, in the middle of each half.
PLACEMENT_OFFSET = TRAY_SIZE[1] / 4


def tray_side_axis(scene: Scene) -> np.ndarray:
    """Unit vector [2] across the tray from its right half to its left half (the tray's
    own y axis, +y of the world for yaw 0)."""
    return np.array([-math.sin(scene.tray_yaw), math.cos(scene.tray_yaw)])


def placement_points(tray_x, tray_y, tray_yaw, item_top, left) -> np.ndarray:
    """[..., 3]: `placement_xyz` for arrays of trays, item heights and sides (`left`
    true for the left half)."""
    off = np.where(left, PLACEMENT_OFFSET, -PLACEMENT_OFFSET)
    return np.stack([tray_x - off * np.sin(tray_yaw), tray_y + off * np.cos(tray_yaw),
                     TRAY_SIZE[2] + np.asarray(item_top, float)], -1)


def placement_xyz(scene: Scene, item_index: int, side: str) -> np.ndarray:
    """Tool tip holding item `item_index` at its top with the item standing in the
    middle of the named half of the tray."""
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    return placement_points(scene.tray_xy[0], scene.tray_xy[1], scene.tray_yaw,
                            scene.items[item_index].top, side == "left")


def tray_side_of(scene: Scene, xy) -> float:
    """Signed distance (m) of the point `xy` from the tray's midline: > 0 on its left
    half, < 0 on its right."""
    return float(np.dot(np.asarray(xy, float)[:2] - np.asarray(scene.tray_xy), tray_side_axis(scene)))


def tray_half_masks(scene: Scene, camera_name: str, width: int = 640, height: int = 480):
    """(left, right): bool [height, width] masks of the tray's visible pixels on each
    half, split where the pixel's ray meets the tray's top plane."""
    _, labels = _rasterize(scene, camera_name, width, height)
    rays = _pixel_rays(camera_name, width, height)
    pos = np.asarray(_camera(camera_name).position)
    t = (TRAY_SIZE[2] - pos[2]) / rays[..., 2]
    xy = pos[:2] + t[..., None] * rays[..., :2]
    side = (xy - np.asarray(scene.tray_xy)) @ tray_side_axis(scene)
    tray = labels == -2
    return tray & (side > 0), tray & (side <= 0)


#: Heights of start poses: from grasp height on the table (where a previous "pick"
#: leaves the arm) up to 0.35 m, so that the policy has seen every state the arm
#: reaches while following instructions one after another.
START_Z = (0.03, 0.35)


def random_starts(rng: np.random.Generator, n: int) -> np.ndarray:
    """[n, 6] start poses: IK of random points over the workspace at START_Z heights
    plus small joint noise; the gripper anywhere between closed and open."""
    p = np.stack([rng.uniform(*WORKSPACE_X, n), rng.uniform(*WORKSPACE_Y, n), rng.uniform(*START_Z, n)], 1)
    q = ik(p)
    q[:, :5] += rng.normal(0.0, 0.05, (n, 5))
    q[:, 5] = rng.uniform(0.0, GRIPPER_OPEN, n)
    return np.clip(q, JOINT_LOWER, JOINT_UPPER)


def random_start(rng: np.random.Generator) -> np.ndarray:
    """One pose of `random_starts`."""
    return random_starts(rng, 1)[0]


def ramp(T: int = CHUNK_LENGTH, tau: float = RAMP_TAU) -> np.ndarray:
    """Fraction of the way to the target at each of the T actions of a chunk."""
    return 1.0 - np.exp(-(np.arange(T) + 1.0) / tau)


def expert_chunk(q_now, q_target, T: int = CHUNK_LENGTH) -> np.ndarray:
    """[T, 6]: chunk[i] = q_now + (q_target - q_now) * (1 - exp(-(i+1)/8))."""
    q_now = np.asarray(q_now, float)
    q_target = np.asarray(q_target, float)
    return q_now[None, :] + (q_target - q_now)[None, :] * ramp(T)[:, None]
