"""A few hundred malformed inputs, generated from a fixed seed, for the caption-table readers (CSV, TSV, JSON Lines),
the YAML parameter reader and the image loader: each either reads or raises LabclipError, never another
exception, never a hang (issue 22)."""

import io
import json
import random
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from labclip import LabclipError
from labclip.config import IMAGES_DIR
from labclip.data import load_captions, read_table
from labclip.images import load_image
from labclip.lab.report import read_params

SEED = 22
TIMEOUT_S = 10
NASTY = [b"\0", b"\"", b",", b";", b"\t", b"\r", b"\n", b"\xff", b"\xfe\xff", b"\xef\xbb\xbf", b"\\", b"{", b"[",
         b"]", b"}", b"&a", b"*a", b"!!python/object:os.system", b"<<: ", b"\x89PNG", b"IDAT", b"zTXt", b"\xe2\x80\xae"]


class Hang(Exception):
    pass


def _mutate(rng: random.Random, data: bytes) -> bytes:
    """One to four random edits: flipped bytes, inserted nasties, deleted or repeated slices, truncation."""
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(data) + 1)
        kind = rng.randrange(6)
        if kind == 0 and data:
            data[min(at, len(data) - 1)] ^= 1 << rng.randrange(8)
        elif kind == 1:
            data[at:at] = rng.choice(NASTY) * rng.choice((1, 1, 3, 200))
        elif kind == 2:
            del data[at:at + rng.randint(1, 64)]
        elif kind == 3:
            data[at:at] = data[at:at + rng.randint(1, 64)] * rng.randint(2, 50)
        elif kind == 4:
            data = data[:at]
        else:
            data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 32)))
    return bytes(data)


CSV = "image,en,ru\ncat.png,a cat,кошка\nred_car.png,\"a red, car\",красная машина\n".encode()
JSONL = (json.dumps({"image": "cat.png", "en": ["a cat", "a kitten"], "ru": "кошка"}, ensure_ascii=False) + "\n"
         + json.dumps({"file_name": "red_car.png", "en": "a red car", "ru": "машина"}, ensure_ascii=False)
         + "\n").encode()
YAML = b"model: demo\nlanguages: [en, ru]\ntop_k: 3\nbatch_size: 8\ntitle: 'A lab report'\nstrict: false\n"


def _special_tables() -> list[tuple[str, bytes]]:
    return [
        (".csv", b"image,en\n" + b"x" * 200_000 + b",a\n"),                      # over the csv field limit
        (".csv", b"\xff\xfeimage,en\n"),                                          # UTF-16 byte order mark
        (".csv", "image,en\ncat.png,a cat\n".encode("utf-16")),
        (".csv", b"image,en\n\"cat.png,a cat\n"),                                 # an open quote
        (".csv", b"image\0,en\ncat.png,a\0cat\n"),
        (".tsv", b"image\ten\ncat.png\ta cat\tmore\textra\n"),
        (".jsonl", b'{"image": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n"),
        (".jsonl", b'{"image": "cat.png", "en": ' + b"9" * 5000 + b"}\n"),      # more digits than int() takes
        (".jsonl", b'{"image": "cat.png", "en": NaN}\n[1, 2]\n'),
        (".jsonl", b'{"image": "cat.png", "en": {"a": 1}}\n'),
        (".jsonl", b'{"image": "cat.png", "en": [1, 2]}\n'),
        (".jsonl", b'{"image": null, "en": "a"}\n'),
        (".jsonl", b'"just a string"\n'),
    ]


def _special_yaml() -> list[bytes]:
    bomb = [b'a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    bomb += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]".encode() for i in range(1, 12)]
    return [b"\n".join(bomb), b"!!python/object/apply:os.system ['true']\n", b"[" * 10_000 + b"]" * 10_000,
            b"top_k: !!binary aGVsbG8=\n", b"? [a, b]\n: c\n", b"captions: {a: 1}\n", b"42\n", b"\xff\xfe\x00\x00",
            b"top_k: 1e400\n", b"languages: [[[en]]]\n", b"strict: yes\n", b"title: !!timestamp 2001-12-14\n"]


def _images(rng: random.Random) -> list[tuple[str, bytes]]:
    picture = Image.open(IMAGES_DIR / "cat.png").convert("RGB").resize((24, 16))
    seeds = []
    for fmt, suffix, extra in (("PNG", ".png", {}), ("JPEG", ".jpg", {}), ("GIF", ".gif", {}), ("BMP", ".bmp", {}),
                               ("TIFF", ".tif", {}), ("WEBP", ".webp", {}),
                               ("PNG", ".png", {"icc_profile": b"\0" * 400})):
        buffer = io.BytesIO()
        picture.save(buffer, fmt, **extra)
        seeds.append((suffix, buffer.getvalue()))
    huge = PngImagePlugin.MAX_TEXT_CHUNK + 10
    info = PngImagePlugin.PngInfo()
    info.add_text("c", "a" * huge, zip=True)
    specials = []
    for kwargs in ({"pnginfo": info}, {"icc_profile": b"\0" * huge}):
        buffer = io.BytesIO()
        Image.new("RGB", (4, 4)).save(buffer, "PNG", **kwargs)
        specials.append((".png", buffer.getvalue()))
    wide = bytearray(seeds[0][1])
    wide[16:24] = (200_000).to_bytes(4, "big") * 2                               # a header claiming 200000 × 200000
    specials += [(".png", bytes(wide)), (".png", b""), (".jpg", b"\xff\xd8\xff"), (".gif", b"GIF89a" + b"\0" * 7)]
    mutated = [(s, _mutate(rng, d)) for _ in range(16) for s, d in seeds]
    return specials + mutated


def _check(cases: list[tuple[str, Callable[[], object]]]) -> None:
    """Run every case with a time limit; collect any exception that is not a LabclipError."""
    def alarm(signum, frame):
        raise Hang

    previous = signal.signal(signal.SIGALRM, alarm)
    wrong = []
    try:
        for name, call in cases:
            signal.setitimer(signal.ITIMER_REAL, TIMEOUT_S)
            try:
                call()
            except LabclipError as err:
                if "\n" in str(err).strip():
                    wrong.append(f"{name}: a message of several lines: {str(err)[:200]!r}")
            except Hang:
                wrong.append(f"{name}: no answer within {TIMEOUT_S} s")
            except Exception as err:  # noqa: BLE001 - what the test is looking for
                wrong.append(f"{name}: {type(err).__name__}: {str(err)[:200]}")
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
    finally:
        signal.signal(signal.SIGALRM, previous)
    assert not wrong, f"{len(wrong)} of {len(cases)} inputs: " + "; ".join(wrong[:10])


@pytest.fixture
def folder(tmp_path) -> Path:
    for name in ("cat.png", "red_car.png"):
        (tmp_path / name).write_bytes((IMAGES_DIR / name).read_bytes())
    return tmp_path


def test_caption_tables_read_or_fail_in_one_line(folder):
    rng = random.Random(SEED)
    inputs = [(".csv", _mutate(rng, CSV)) for _ in range(70)] + [(".tsv", _mutate(rng, CSV.replace(b",", b"\t")))
                                                                  for _ in range(20)]
    inputs += [(".jsonl", _mutate(rng, JSONL)) for _ in range(70)] + _special_tables()
    cases = []
    for i, (suffix, data) in enumerate(inputs):
        path = folder / f"t{i}{suffix}"
        path.write_bytes(data)
        cases.append((f"table {i} ({suffix})", lambda path=path: load_captions(path)))
        cases.append((f"table {i} ({suffix}, read_table)", lambda path=path: read_table(path)))
    assert len(inputs) > 170
    _check(cases)


def test_parameter_files_read_or_fail_in_one_line(tmp_path):
    rng = random.Random(SEED + 1)
    inputs = [_mutate(rng, YAML) for _ in range(80)] + _special_yaml()
    cases = []
    for i, data in enumerate(inputs):
        path = tmp_path / f"p{i}.yaml"
        path.write_bytes(data)
        cases.append((f"params {i}", lambda path=path: read_params(path)))
    _check(cases)


@pytest.mark.filterwarnings("ignore:Tag data larger than file:UserWarning")  # Pillow on broken TIFFs
def test_images_load_or_fail_in_one_line(tmp_path):
    rng = random.Random(SEED + 2)
    inputs = _images(rng)
    cases = []
    for i, (suffix, data) in enumerate(inputs):
        path = tmp_path / f"i{i}{suffix}"
        path.write_bytes(data)
        cases.append((f"image {i} ({suffix})", lambda path=path: load_image(path)))
    assert len(inputs) > 100
    _check(cases)
