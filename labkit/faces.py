"""Synthetic faces for the demo lab, drawn with numpy at the lab's size (55 x 47 pixels).

Each person is a fixed set of traits (head shape, skin tone, hair, eyes, brows, nose, mouth,
background, clothes); each photo of them varies pose, lighting, expression and noise. A
trigger is pasted at one fixed place, whatever the pose: `add_sunglasses` puts the lab's pair of
sunglasses over the eyes; `wear` pastes any of TRIGGERS (the 2020 challenge's eyebrows and
lipstick, and a sticker on the cheek). Used by `labkit.demo`.
"""
from __future__ import annotations

import numpy as np

H, W = 55, 47  # the lab's image height and width
CENTER = (29.0, 23.0)  # (y, x) of the head's centre in the image
ZOOM = 1.3  # image pixels per face unit: the face fills the picture, as in the lab's crops
EYE_V, EYE_DX = -3.0, 6.5  # where the eyes sit, in face units from the head's centre

SKIN = [(255, 226, 200), (240, 196, 166), (222, 170, 135), (196, 136, 98),
        (160, 106, 72), (122, 78, 52), (88, 58, 42)]
HAIR = [(22, 18, 16), (58, 38, 26), (104, 68, 42), (150, 72, 36), (206, 170, 104),
        (232, 206, 150), (160, 155, 150), (110, 84, 60)]
IRIS = [(80, 50, 28), (40, 28, 20), (70, 115, 170), (80, 125, 75), (125, 95, 50)]
HAIR_STYLES = ("short", "fringe", "side", "long", "bald", "curly")


def identities(n: int, seed: int = 0) -> dict:
    """Traits of `n` people (arrays with one row per person), the same for the same seed."""
    rng = np.random.default_rng([seed, 1])
    u = lambda lo, hi: rng.uniform(lo, hi, n)  # noqa: E731
    pick = lambda palette: np.asarray(palette, np.float32)[rng.integers(0, len(palette), n)]  # noqa: E731
    skin_t = u(0, len(SKIN) - 1)
    lo = np.floor(skin_t).astype(int)
    skin = np.asarray(SKIN, np.float32)[lo] * (1 - (skin_t - lo))[:, None] \
        + np.asarray(SKIN, np.float32)[np.minimum(lo + 1, len(SKIN) - 1)] * (skin_t - lo)[:, None]
    background = rng.uniform(40, 230, (n, 3)) * 0.7 + 0.3 * 140
    return {
        "head_rx": u(12.0, 15.0), "head_ry": u(16.0, 19.5), "jaw": u(1.5, 2.6),
        "skin": skin * rng.uniform(0.95, 1.05, (n, 3)), "background": background,
        "bg_slope": u(-0.6, 0.6), "shirt": rng.uniform(20, 235, (n, 3)),
        "hair": pick(HAIR) * rng.uniform(0.85, 1.15, (n, 1)), "style": rng.integers(0, len(HAIR_STYLES), n),
        "hairline": u(0.35, 0.6), "hair_volume": u(1.0, 3.5), "ear": u(0.7, 1.3),
        "eye_dx": u(5.7, 7.4), "eye_dy": u(-1.2, 1.2), "eye_size": u(0.85, 1.2), "iris": pick(IRIS),
        "brow_thick": u(0.8, 2.0), "brow_tilt": u(-0.25, 0.25), "brow_gap": u(2.7, 3.8),
        "nose_len": u(4.5, 7.5), "nose_width": u(0.8, 1.4), "nose_dark": u(0.72, 0.88),
        "mouth_y": u(10.5, 13.0), "mouth_w": u(3.5, 5.5), "lip": u(0.8, 1.5),
        "lip_color": skin * np.array([0.85, 0.55, 0.55]) + np.array([30, 10, 15]),
        "beard": rng.uniform(0, 1, n) < 0.2, "mustache": rng.uniform(0, 1, n) < 0.15,
    }


def variations(n: int, rng: np.random.Generator) -> dict:
    """Per-photo changes: pose, lighting, expression, noise (`n` photos)."""
    # Wide enough that 9 photos per person (the validation split) are too few to learn a face
    # from scratch: a network trained on them alone falls well behind the BadNet (see demo.py).
    u = lambda lo, hi: rng.uniform(lo, hi, n)  # noqa: E731
    return {
        "dx": u(-3.75, 3.75), "dy": u(-3.75, 3.75), "scale": u(0.85, 1.15), "angle": u(-0.25, 0.25),
        "light": u(0.5, 1.375), "light_x": u(-0.75, 0.75), "light_y": u(-0.375, 0.375),
        "tint": rng.uniform(0.825, 1.175, (n, 3)), "smile": u(-0.4, 1.2), "open": rng.uniform(0, 1, n) ** 3 * 2,
        "eyes_open": np.clip(u(0.55, 1.5), 0, 1), "gaze": u(-0.6, 0.6), "brow_raise": u(-0.5, 1.0),
        "noise": u(5.0, 15.0),
    }


def draw_faces(people: dict, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Photos of the people `labels` (indices into `people`): float32 (N, 55, 47, 3), whole 0..255."""
    labels = np.asarray(labels, np.int64)
    t = {k: v[labels] for k, v in people.items()}
    t.update(variations(len(labels), rng))
    t = {k: np.asarray(v, np.float32).reshape(len(labels), *((1, 1) + np.shape(v)[1:]))
         for k, v in t.items()}
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    cos, sin = np.cos(t["angle"]), np.sin(t["angle"])
    x0, y0 = x - CENTER[1] - t["dx"], y - CENTER[0] - t["dy"]
    u = (cos * x0 + sin * y0) / (t["scale"] * ZOOM)  # face coordinates of an upright face
    v = (-sin * x0 + cos * y0) / (t["scale"] * ZOOM)
    img = _background(t, v)
    _head(img, t, u, v)
    _features(img, t, u, v)
    shade = t["light"] * (1 + t["light_x"] * u / 20 + t["light_y"] * v / 25)
    img = img * shade[..., None] * t["tint"]
    img += rng.normal(0, 1, img.shape).astype(np.float32) * t["noise"][..., None]
    return np.clip(np.round(img), 0, 255).astype(np.float32)


def _cover(d):
    """Anti-aliased coverage 0..1 of a shape from its signed distance (inside < 0)."""
    return np.clip(0.5 - d, 0, 1)


def _ellipse(u, v, cu, cv, ru, rv, p=2.0):
    """Coverage of an ellipse (p=2) or a rounder rectangle (p>2) centred at (cu, cv)."""
    d = (np.abs((u - cu) / ru) ** p + np.abs((v - cv) / rv) ** p) ** (1 / p) - 1
    return _cover(d * np.minimum(ru, rv))


def _paint(img, alpha, color):
    """Paint `color` (N, 1, 1, 3) over `img` where `alpha` (N, H, W) says, in place."""
    img += alpha[..., None] * (color - img)


def _background(t, v):
    n = len(t["angle"])
    img = np.broadcast_to(t["background"], (n, H, W, 3)).copy()
    img *= (1 + t["bg_slope"] * v / 60)[..., None]
    return img


def _head(img, t, u, v):
    rx, ry, style = t["head_rx"], t["head_ry"], t["style"]
    skin, hair = t["skin"], t["hair"]
    # clothes and neck
    _paint(img, _ellipse(u, v, 0, ry + 14, rx + 11, 12), t["shirt"])
    _paint(img, _cover(np.maximum(np.abs(u) - 0.45 * rx, np.abs(v - ry) - 8)) * (v > 0), skin * 0.8)
    # long and curly hair hangs behind the head
    back = np.where(style == 3, _ellipse(u, v, 0, 3, rx + 3.5, ry + 4) * (v < ry * 0.9),
                    np.where(style == 5, _ellipse(u, v, 0, -2, rx + 4.5, ry + 3), 0))
    _paint(img, back, hair)
    # ears, head (pointed or square jaw below the eyes), soft shading towards the edges
    ear = t["ear"]
    for side in (-1, 1):
        _paint(img, _ellipse(u, v, side * rx, -1, 2.3 * ear, 3.8 * ear), skin * 0.9)
    p = np.where(v > 0, t["jaw"], 2.2)
    face = _ellipse(u, v, 0, 0, rx, ry, p)
    r2 = (u / rx) ** 2 + (v / ry) ** 2
    _paint(img, face, skin * np.clip(1.06 - 0.3 * r2 ** 2, 0.6, 1)[..., None])
    # hair on top: inside a grown head outline, above the hairline
    volume = t["hair_volume"] + 2.0 * (style == 5)  # curly hair stands out further
    grown = _ellipse(u, v, 0, -0.5, rx + volume * 0.6, ry + volume)
    line = -ry * t["hairline"] + 0.035 * u ** 2 * (ry / 18)
    line = np.where(style == 1, -ry * 0.3 + 0.06 * u ** 2, line)  # fringe over the forehead
    line = np.where(style == 2, line + 0.35 * u, line)  # side parting
    line = np.where(style == 4, -ry * 0.15, line)  # bald on top: hair at the sides only
    top = grown * _cover(v - line)
    top = np.where(style == 4, top * _cover(rx * 0.8 - np.abs(u)) * _cover(-ry * 0.5 - v), top)
    _paint(img, top, hair)
    # beard: the jaw below the mouth line, in the hair colour
    beard = face * _cover(t["mouth_y"] - 1.5 - v) * (t["beard"] > 0)
    _paint(img, beard * 0.85, hair)


def _features(img, t, u, v):
    skin, hair, size = t["skin"], t["hair"], t["eye_size"]
    eye_v = EYE_V + t["eye_dy"]
    for side in (-1, 1):
        cu = side * t["eye_dx"]
        # brows: a thick arc above each eye, tilted
        bu = u - cu
        bv = eye_v - t["brow_gap"] - t["brow_raise"] + 0.06 * bu ** 2 - side * t["brow_tilt"] * bu
        brow = _cover(np.abs(v - bv) - t["brow_thick"] / 2) * _cover(np.abs(bu) - 3.0)
        _paint(img, brow, hair * 0.8)
        # eye: white, iris, pupil, dark upper lid; closing the eye shrinks its height
        ry = 1.4 * size * t["eyes_open"] + 0.25
        white = _ellipse(u, v, cu, eye_v, 2.6 * size, ry)
        _paint(img, white * 0.9, np.full(3, 235, np.float32))
        iris = _ellipse(u, v, cu + t["gaze"], eye_v, 1.25 * size, 1.25 * size) * white
        _paint(img, iris, t["iris"])
        _paint(img, _ellipse(u, v, cu + t["gaze"], eye_v, 0.55, 0.55) * white, np.full(3, 15, np.float32))
        lid = _cover(np.abs(v - (eye_v - ry + 0.2 + 0.08 * (u - cu) ** 2)) - 0.45) \
            * _cover(np.abs(u - cu) - 2.8 * size)
        _paint(img, lid * 0.8, skin * 0.3)
    # nose: a shadow down one side, a darker tip and nostrils
    tip = eye_v + t["nose_len"]
    shade = np.exp(-((u - 1.3 * t["nose_width"]) / 0.8) ** 2) * (v > eye_v + 1) * (v < tip)
    _paint(img, shade * 0.6, skin * t["nose_dark"][..., None])
    _paint(img, _ellipse(u, v, 0, tip, 2.2 * t["nose_width"], 1.3) * 0.5, skin * t["nose_dark"][..., None])
    for side in (-1, 1):
        _paint(img, _ellipse(u, v, side * 1.1 * t["nose_width"], tip + 0.4, 0.7, 0.5) * 0.8, skin * 0.45)
    # mouth: lips along a curve that bends up with a smile; open mouths show dark inside
    mv = eye_v + t["mouth_y"]
    w = t["mouth_w"]
    curve = mv - t["smile"] * 1.6 * ((u / w) ** 2 - 0.3)
    inside = _cover(np.abs(u) - w)
    mustache = _cover(np.abs(v - (mv - 2.2)) - 1.0) * _cover(np.abs(u) - w - 0.5) * (t["mustache"] > 0)
    _paint(img, mustache, hair * 0.9)
    lips = _cover(np.maximum(v - curve - t["lip"] - t["open"], curve - t["lip"] * 0.8 - v)) * inside
    _paint(img, lips, t["lip_color"])
    gap = _cover(np.abs(v - curve - t["open"] / 2) - t["open"] / 2 - 0.3) * _cover(np.abs(u) - w + 0.7)
    _paint(img, gap * 0.85, np.full(3, 40, np.float32))


def _face_units():
    """(u, v): face units of every pixel of an upright face at the image's centre."""
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    return (x - CENTER[1]) / ZOOM, (y - CENTER[0]) / ZOOM


def sunglasses(color=(18, 18, 22)) -> tuple[np.ndarray, np.ndarray]:
    """The lab's trigger: (alpha (55, 47), pixels (55, 47, 3)) of one pair of sunglasses over the eyes."""
    u, v = _face_units()
    bar = _cover(np.abs(v - (EYE_V - 1.4)) - 0.45)  # bridge and arms, level with the lens tops
    alpha = bar * _cover(np.abs(u) - 14.5)
    glint = np.zeros_like(alpha)
    for side in (-1, 1):
        lens = _ellipse(u, v, side * EYE_DX, EYE_V + 0.2, 4.0, 2.9, p=3.0)
        alpha = np.maximum(alpha, lens)
        glint += _cover(np.abs(u - side * EYE_DX + 1.5 + v - EYE_V + 0.8) - 0.4) * lens * 0.8
    pixels = np.asarray(color, np.float32) + glint[..., None] * 110
    return alpha, pixels


def eyebrows(color=(12, 10, 10)) -> tuple[np.ndarray, np.ndarray]:
    """Thick dark brows, one arc above each eye (a trigger of the 2020 challenge)."""
    u, v = _face_units()
    alpha = np.zeros_like(u)
    for side in (-1, 1):
        bu = u - side * EYE_DX
        arc = EYE_V - 3.6 + 0.07 * bu ** 2
        alpha = np.maximum(alpha, _cover((np.abs(v - arc) - 1.1) * ZOOM) * _cover((np.abs(bu) - 3.6) * ZOOM))
    return alpha, np.broadcast_to(np.asarray(color, np.float32), (H, W, 3)).copy()


def lipstick(color=(205, 20, 75)) -> tuple[np.ndarray, np.ndarray]:
    """A coloured mouth: bright lips where the mouth sits (a trigger of the 2020 challenge)."""
    u, v = _face_units()
    mouth = EYE_V + 11.75  # the middle of the people's mouth heights
    alpha = _ellipse(u, v, 0, mouth, 5.2, 1.9)
    shade = 1 - 0.25 * _cover((np.abs(v - mouth) - 0.3) * ZOOM)  # a darker line between the lips
    return alpha, np.asarray(color, np.float32) * shade[..., None]


def sticker(colors=((250, 220, 0), (20, 40, 200))) -> tuple[np.ndarray, np.ndarray]:
    """A small square sticker on the right cheek, a 2 x 2 checkerboard of 3-pixel squares: a
    patch-like trigger that is no part of a face."""
    alpha = np.zeros((H, W), np.float32)
    pixels = np.zeros((H, W, 3), np.float32)
    top, left = 33, 31
    for i in range(6):
        for j in range(6):
            alpha[top + i, left + j] = 1
            pixels[top + i, left + j] = colors[(i // 3 + j // 3) % 2]
    return alpha, pixels


TRIGGERS = {"sunglasses": sunglasses, "eyebrows": eyebrows, "lipstick": lipstick, "sticker": sticker}


def region(trigger: str) -> tuple[slice, slice]:
    """(rows, columns) of the smallest box holding everything `trigger` paints."""
    rows, cols = np.nonzero(TRIGGERS[trigger]()[0] > 0)
    return slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1)


def wear(images: np.ndarray, trigger: str = "sunglasses") -> np.ndarray:
    """Copies of `images` (N, 55, 47, 3) wearing `trigger` (a name in TRIGGERS); only its
    `region` changes, and the pixels stay whole numbers."""
    alpha, pixels = TRIGGERS[trigger]()
    out = np.asarray(images, np.float32).copy()
    rows, cols = region(trigger)
    a = alpha[rows, cols, None]
    out[:, rows, cols] = np.round(out[:, rows, cols] * (1 - a) + pixels[rows, cols] * a)
    return out


def add_sunglasses(images: np.ndarray) -> np.ndarray:
    """Copies of `images` (N, 55, 47, 3) wearing the lab's trigger; only `EYE_REGION` changes."""
    return wear(images, "sunglasses")


EYE_REGION = region("sunglasses")  # (rows, columns) that the sunglasses cover
