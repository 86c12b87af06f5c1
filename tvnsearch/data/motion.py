"""The motion benchmark: 24 classes, an object colour (3) times an event (8), where one frame shows
the colour and never the event.

Three two-tone balls of one colour (light top, dark bottom) drift on a textured background that a
camera pans, under a light that may change. The events ask for different temporal modelling:

- direction and speed: the balls rise or fall slowly (``up``, ``down``) or move fast either way
  (``fast``); ``steady`` balls keep their height. The two tones turn direction into the order in
  which a pixel sees light and dark, which a temporal convolution can learn, but only where the
  clip's resolution keeps the halves apart (spatial detail).
- order of events: the light dims once (``dim``) or brightens once (``brighten``).
- periodicity: the light alternates every frame (``strobe``) or every two frames (``flicker``):
  a clip with an even frame stride never sees the strobe, and one with a stride of 4 never sees
  the flicker, so the clip a genome samples decides what it can learn.

Nothing of the event is in one frame: the balls start anywhere on a wrapping frame, so their
position is uniform in every frame, and the light of every class is full or dim with even odds in
the middle frame (a steady light is either, a switch falls symmetrically about the middle). A
one-frame network can learn the colour only: top-1 1/8 at best. Nuisances: the camera's pan,
sideways drift of either sign (left-right flips stay in their class), the background's colour and
texture, the balls' sizes and shades, sensor noise and coarse MPEG-4 quantisation.

Numpy only; every frame of a video is rendered at once, and ``rng`` decides everything.
"""

from __future__ import annotations

import colorsys

import numpy as np

HUES = {"red": 0.0, "green": 0.33, "blue": 0.62}
EVENTS = ("steady", "up", "down", "fast", "dim", "brighten", "strobe", "flicker")
CLASSES = tuple(f"{h}_{e}" for h in HUES for e in EVENTS)
# A fixed MPEG-4 Part 2 quantiser (2 finest, 31 coarsest): visible blocking and ringing at 64 px,
# about 12 grey levels RMS from the rendered frames against 9 at a high bitrate.
ENCODING = {"qmin": "8", "qmax": "8"}

# Pixels per frame at 64 px. Slow and fast differ by more than twice the camera's largest pan, so
# every class stays unambiguous in frame coordinates too; fast stays under 16 px per sampled frame
# at stride 3, short of the half frame where a wrap would alias the direction.
SLOW, FAST = (1.5, 2.5), (3.5, 5.0)
CAMERA = 0.5  # the largest pan, pixels per frame on each axis
DRIFT = 1.0  # the largest sideways drift of the balls, either direction
NUM_BALLS = 3  # more balls, more pixels that show the event: learnt within a short budget
RADIUS = (6.0, 9.0)  # pixels at 64 px: 3-4.5 px at 32 px, where the two tones start to blur
SHADE = 0.45  # the dark half's brightness against the light half's
DIM = (0.4, 0.55)  # a dim light's gain against a full one
NOISE = (2.0, 6.0)  # sensor noise, standard deviation in grey levels
TEXTURE = (10.0, 25.0)  # the background texture's standard deviation, grey levels
HUE_JITTER = 0.05  # of the hue circle: a class is a colour family, not one colour


def render_motion(name: str, size: int, num_frames: int, rng: np.random.Generator) -> np.ndarray:
    """One video of class ``name`` as uint8 ``(T, H, W, 3)``."""
    hue, event = name.split("_", 1)
    scale, times = size / 64, np.arange(num_frames, dtype=float)
    pan = times[:, None] * rng.uniform(-CAMERA, CAMERA, size=2) * scale  # (T, 2)
    frames = _panned_texture(size, pan, rng)
    light = 255 * np.array(colorsys.hsv_to_rgb(_hue(hue, rng), rng.uniform(0.6, 1.0), 1.0))
    light = light * rng.uniform(0.7, 1.0)
    for _ in range(NUM_BALLS):
        centres = _trajectory(event, times, rng) * scale - pan
        coverage, lower = _ball(size, centres, rng.uniform(*RADIUS) * scale)
        colour = light * np.where(lower, SHADE, 1.0)[..., None]
        frames = frames * (1 - coverage[..., None]) + colour * coverage[..., None]
    frames = frames * _lighting(event, num_frames, rng)[:, None, None, None]
    frames = frames + rng.normal(0.0, rng.uniform(*NOISE), size=frames.shape)
    return frames.clip(0, 255).round().astype(np.uint8)


def _hue(name: str, rng: np.random.Generator) -> float:
    return (HUES[name] + rng.uniform(-HUE_JITTER, HUE_JITTER)) % 1.0


def _trajectory(event: str, times: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``(T, 2)`` centres (row, column) in the scene at 64 px, before the camera's pan."""
    start = rng.uniform(0, 64, size=2)
    sideways = rng.uniform(-DRIFT, DRIFT) * times
    return np.stack([start[0] + _vertical(event, times, rng), start[1] + sideways], axis=1)


def _vertical(event: str, times: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if event in ("up", "down"):
        return (-1.0 if event == "up" else 1.0) * rng.uniform(*SLOW) * times
    if event == "fast":
        return rng.choice([-1.0, 1.0]) * rng.uniform(*FAST) * times
    return np.zeros_like(times)


def _ball(size: int, centres: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """``(T, H, W)`` coverage in [0, 1] of a disc on a torus with a one-pixel soft edge, and
    whether each pixel is in its lower (dark) half."""
    pixels = np.arange(size) + 0.5
    dy = (pixels[None, :] - centres[:, :1] + size / 2) % size - size / 2  # (T, H)
    dx = (pixels[None, :] - centres[:, 1:] + size / 2) % size - size / 2  # (T, W)
    distance = np.hypot(dy[:, :, None], dx[:, None, :])
    lower = np.broadcast_to(dy[:, :, None] > 0, distance.shape)
    return np.clip(radius + 0.5 - distance, 0.0, 1.0), lower


def _lighting(event: str, num_frames: int, rng: np.random.Generator) -> np.ndarray:
    """``(T,)`` gain of the light: 1 (full) or dim, each with even odds in the middle frame."""
    dim, t = rng.uniform(*DIM), np.arange(num_frames)
    if event in ("dim", "brighten"):
        first, then = (1.0, dim) if event == "dim" else (dim, 1.0)
        middle, spread = num_frames // 2, num_frames // 4
        switch = rng.integers(middle - spread, middle + spread)  # the first frame after it
        return np.where(t < switch, first, then)
    if event in ("strobe", "flicker"):
        half = 1 if event == "strobe" else 2  # frames per phase
        full = ((t + rng.integers(2 * half)) // half) % 2 == 0
        return np.where(full, 1.0, dim)
    return np.full(num_frames, 1.0 if rng.random() < 0.5 else dim)


def _panned_texture(size: int, pan: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``(T, H, W, 3)`` a coloured texture that wraps, moved by ``pan`` (``(T, 2)`` pixels).

    Random phases on a 1/f^2 spectrum look like a natural scene; the Fourier shift theorem moves
    it by sub-pixel amounts without the blur of interpolation.
    """
    freq = np.fft.fftfreq(size)
    amplitude = 1.0 / np.maximum(np.hypot(freq[:, None], freq[None, :]), 1.0 / size) ** 2
    amplitude[0, 0] = 0.0
    spectrum = amplitude * np.exp(2j * np.pi * rng.uniform(size=(3, size, size)))
    turn = np.exp(
        -2j * np.pi * (pan[:, 0, None, None] * freq[:, None] + pan[:, 1, None, None] * freq)
    )
    texture = np.fft.ifft2(spectrum[None] * turn[:, None]).real  # (T, 3, H, W)
    texture *= rng.uniform(*TEXTURE) / texture[0].std(axis=(1, 2), keepdims=True)
    return texture.transpose(0, 2, 3, 1) + rng.uniform(90, 170, size=3)
