"""Regenerate data/images/ and data/images/SOURCES.csv from installed packages and Debian fonts.

Photos are copied byte for byte from scikit-image's bundled data; pictograms are rendered from
Noto Color Emoji (Pillow draws it only at size 109, so it is drawn there and resized) and the
treble clef from Noto Music. The output is deterministic for given package and font versions.
"""

from __future__ import annotations

import csv
import shutil
import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "data" / "images"
FONTS = Path("/usr/share/fonts/truetype/noto")
EMOJI_FONT = FONTS / "NotoColorEmoji.ttf"
MUSIC_FONT = FONTS / "NotoMusic-Regular.ttf"
SIDE = 256

SKIMAGE = "scikit-image (skimage.data)"
EMOJI = "Noto Color Emoji (Debian fonts-noto-color-emoji)"
NOTO_LICENCE = "SIL Open Font License 1.1"

# file, what it shows, how it is made, source, author, licence
IMAGES = [
    ("astronaut.png", "portrait of astronaut Eileen Collins", ("photo", "astronaut.png"),
     f"{SKIMAGE}.astronaut()", "NASA", "public domain"),
    ("cat.png", "Chelsea the tabby cat", ("photo", "chelsea.png"),
     f"{SKIMAGE}.chelsea()", "Stefan van der Walt", "CC0"),
    ("coffee.png", "a cup of coffee on a saucer", ("photo", "coffee.png"),
     f"{SKIMAGE}.coffee()", "Rachel Michetti (Pikolo Espresso Bar)", "CC0"),
    ("rocket.jpg", "a Falcon 9 rocket on its launch pad at night", ("photo", "rocket.jpg"),
     f"{SKIMAGE}.rocket()", "SpaceX", "public domain"),
    ("cameraman.png", "black-and-white photo of a man with a film camera on a tripod", ("photo", "camera.png"),
     f"{SKIMAGE}.camera()", "Lav Varshney", "CC0"),
    ("galaxies.jpg", "Hubble deep field: many distant galaxies", ("photo", "hubble_deep_field.jpg"),
     f"{SKIMAGE}.hubble_deep_field()", "NASA", "public domain"),
    ("horse.png", "black silhouette of a horse", ("photo", "horse.png"),
     f"{SKIMAGE}.horse()", "Andreas Preuss", "CC0"),
    ("red_car.png", "a red car (pictogram)", ("emoji", "\U0001F697"),
     f"{EMOJI}, U+1F697 AUTOMOBILE", "Google (Noto Emoji)", NOTO_LICENCE),
    ("pizza.png", "a slice of pizza (pictogram)", ("emoji", "\U0001F355"),
     f"{EMOJI}, U+1F355 SLICE OF PIZZA", "Google (Noto Emoji)", NOTO_LICENCE),
    ("mountain.png", "a snow-capped mountain (pictogram)", ("emoji", "\U0001F3D4"),
     f"{EMOJI}, U+1F3D4 SNOW CAPPED MOUNTAIN", "Google (Noto Emoji)", NOTO_LICENCE),
    ("island.png", "a desert island with a palm tree (pictogram)", ("emoji", "\U0001F3DD"),
     f"{EMOJI}, U+1F3DD DESERT ISLAND", "Google (Noto Emoji)", NOTO_LICENCE),
    ("treble_clef.png", "a treble clef, a musical symbol", ("glyph", "\U0001D11E"),
     "Noto Music (Debian fonts-noto-core), U+1D11E MUSICAL SYMBOL G CLEF", "Google (Noto fonts)", NOTO_LICENCE),
]


def _emoji(char: str) -> Image.Image:
    font = ImageFont.truetype(str(EMOJI_FONT), 109)
    canvas = Image.new("RGBA", (160, 160), (255, 255, 255, 0))
    ImageDraw.Draw(canvas).text((80, 80), char, font=font, embedded_color=True, anchor="mm")
    box = canvas.getbbox()
    glyph = canvas.crop(box)
    side = int(max(glyph.size) * 1.15)
    square = Image.new("RGBA", (side, side), (255, 255, 255, 255))
    square.alpha_composite(glyph, ((side - glyph.width) // 2, (side - glyph.height) // 2))
    return square.convert("RGB").resize((SIDE, SIDE), Image.Resampling.LANCZOS)


def _glyph(char: str) -> Image.Image:
    font = ImageFont.truetype(str(MUSIC_FONT), 180)
    canvas = Image.new("L", (SIDE * 2, SIDE * 2), 255)
    ImageDraw.Draw(canvas).text((SIDE, SIDE), char, font=font, fill=0, anchor="mm")
    left, top, right, bottom = Image.eval(canvas, lambda v: 255 - v).getbbox()
    glyph = canvas.crop((left, top, right, bottom))
    scale = SIDE * 0.8 / max(glyph.size)
    glyph = glyph.resize((round(glyph.width * scale), round(glyph.height * scale)), Image.Resampling.LANCZOS)
    square = Image.new("L", (SIDE, SIDE), 255)
    square.paste(glyph, ((SIDE - glyph.width) // 2, (SIDE - glyph.height) // 2))
    return square.convert("RGB")


def build(out: Path = OUT) -> list[Path]:
    """Write every image and SOURCES.csv into ``out``; return the image paths."""
    import skimage.data

    for font in (EMOJI_FONT, MUSIC_FONT):
        if not font.exists():
            sys.exit(f"make_images: font {font} is missing; `make data` installs fonts-noto-color-emoji fonts-noto-core")
    out.mkdir(parents=True, exist_ok=True)
    skimage_dir = Path(skimage.data.__file__).parent
    written = []
    for name, _shows, (kind, what), *_ in IMAGES:
        target = out / name
        if kind == "photo":
            shutil.copyfile(skimage_dir / what, target)
        else:
            (_emoji(what) if kind == "emoji" else _glyph(what)).save(target, optimize=False)
        written.append(target)
    with open(out / "SOURCES.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["file", "shows", "source", "author", "licence"])
        for name, shows, _make, source, author, licence in IMAGES:
            writer.writerow([name, shows, source, author, licence])
    return written


if __name__ == "__main__":
    for path in build(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT):
        print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
