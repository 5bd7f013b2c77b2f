"""A tiny 5x7 bitmap font: names on the composite's placeholder tiles, drawn into a luma plane
with numpy (no font library at run time). Upper-case letters, digits and ``. - _ @``; anything
else is drawn as ``?``.
"""

from __future__ import annotations

import numpy as np

#: Five columns per glyph, one byte each, bit 0 the top row (the classic 5x7 LCD font).
_GLYPHS: dict[str, str] = {
    'A': '7e1111117e',
    'B': '7f49494936',
    'C': '3e41414122',
    'D': '7f4141221c',
    'E': '7f49494941',
    'F': '7f09090901',
    'G': '3e4149497a',
    'H': '7f0808087f',
    'I': '00417f4100',
    'J': '2040413f01',
    'K': '7f08142241',
    'L': '7f40404040',
    'M': '7f020c027f',
    'N': '7f0408107f',
    'O': '3e4141413e',
    'P': '7f09090906',
    'Q': '3e4151215e',
    'R': '7f09192946',
    'S': '4649494931',
    'T': '01017f0101',
    'U': '3f4040403f',
    'V': '1f2040201f',
    'W': '3f4038403f',
    'X': '6314081463',
    'Y': '0708700807',
    'Z': '6151494543',
    '0': '3e5149453e',
    '1': '00427f4000',
    '2': '4261514946',
    '3': '2141454b31',
    '4': '1814127f10',
    '5': '2745454539',
    '6': '3c4a494930',
    '7': '0171090503',
    '8': '3649494936',
    '9': '064949291e',
    ' ': '0000000000',
    '.': '0060600000',
    '-': '0808080808',
    '_': '4040404040',
    '@': '324979413e',
    '?': '0201510906',
}
_COLUMNS = {ch: np.array([[(b >> row) & 1 for b in bytes.fromhex(h)] for row in range(7)],
                         dtype=bool) for ch, h in _GLYPHS.items()}


def draw_text(plane: np.ndarray, text: str, *, x: int, y: int, max_width: int,
              luma: int = 235) -> None:
    """Draw ``text`` centred on ``(x, y)`` in ``plane`` (a luma plane, modified in place), as
    large as fits ``max_width`` (scale 1..4: 6..24 pixels a character); text longer than
    fits at scale 1 is cut with ``..``."""
    text = text.upper()
    if not text or max_width < 6:
        return
    scale = max(1, min(4, max_width // (6 * len(text))))
    fits = max_width // (6 * scale)
    if len(text) > fits:
        text = text[:max(0, fits - 2)] + ".."
    width = len(text) * 6 * scale - scale
    left, top = x - width // 2, y - 7 * scale // 2
    for i, ch in enumerate(text):
        glyph = _COLUMNS.get(ch, _COLUMNS["?"])
        mask = np.kron(glyph, np.ones((scale, scale), dtype=bool))
        gx = left + i * 6 * scale
        region = plane[max(0, top):top + mask.shape[0], max(0, gx):gx + mask.shape[1]]
        cut = mask[max(0, -top):max(0, -top) + region.shape[0],
                   max(0, -gx):max(0, -gx) + region.shape[1]]
        region[cut] = luma
