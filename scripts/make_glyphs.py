"""Builds assets/glyphs.bin, the bitmap glyphs the node draws instruction text with, from
GNU Unifont (Debian package `unifont`: /usr/share/unifont/unifont.hex), used under the
SIL Open Font License 1.1 (assets/UNIFONT-LICENSE.txt).

The node embeds the file, so heatmaps render Chinese and English with no font installed.
Kept: Latin, general and CJK punctuation, kana, CJK unified ideographs, full-width forms.

Format: b"VLAGLYPH1", u32 count, then per glyph, sorted by code point: u32 code point,
u8 width in pixels (8 or 16), 32 bytes: 16 rows of 2 bytes, most significant bit left.
"""

import struct
import sys

RANGES = [
    (0x0020, 0x007E), (0x00A0, 0x024F), (0x2000, 0x206F), (0x2190, 0x21FF),
    (0x3000, 0x30FF), (0x4E00, 0x9FFF), (0xFF00, 0xFFEF),
]


def main(src="/usr/share/unifont/unifont.hex", out="assets/glyphs.bin"):
    glyphs = []
    with open(src) as f:
        for line in f:
            cp, bits = line.strip().split(":")
            cp = int(cp, 16)
            if not any(a <= cp <= b for a, b in RANGES):
                continue
            raw = bytes.fromhex(bits)
            if len(raw) == 16:  # 8 pixels wide: one byte per row
                width, rows = 8, b"".join(bytes([r, 0]) for r in raw)
            elif len(raw) == 32:
                width, rows = 16, raw
            else:
                continue
            glyphs.append((cp, width, rows))
    glyphs.sort()
    with open(out, "wb") as f:
        f.write(b"VLAGLYPH1" + struct.pack("<I", len(glyphs)))
        for cp, width, rows in glyphs:
            f.write(struct.pack("<IB", cp, width) + rows)
    print(f"{out}: {len(glyphs)} glyphs")


if __name__ == "__main__":
    main(*sys.argv[1:])
