"""``labclip embed``: Parquet shards in the shared format, resumable, atomic, one-line errors; Ray = local."""

import hashlib
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from labclip import shards
from labclip.bulk import Plan, encode_files
from labclip.cli import main
from labclip.errors import LabclipError

pq = pytest.importorskip("pyarrow.parquet")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Seven images in a tree: JPEGs large enough for draft decoding to apply (tiny model: 32 px input), a PNG."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i in range(6):
        small = Image.fromarray((rng.random((12, 16, 3)) * 255).astype(np.uint8))
        folder = root / ("sub dir" if i % 2 else "")
        folder.mkdir(exist_ok=True)
        small.resize((320 + 16 * i, 240), Image.Resampling.BICUBIC).save(folder / f"p{i}.jpg", quality=90)
    Image.new("RGB", (50, 40), (200, 30, 30)).save(root / "red.png")
    (root / "notes.txt").write_text("not an image, not listed")
    return root


def embed(photos, out, model_dir, *extra):
    return main(["embed", str(photos), "--out", str(out), "--model", str(model_dir), "--workers", "0", *extra])


def rows(out):
    table = pq.read_table(sorted(out.glob("*.parquet"))).sort_by("path")
    return table.drop(["embedding"]).to_pylist(), np.stack(table["embedding"].to_numpy(zero_copy_only=False))


def test_shards_follow_the_shared_schema(tmp_path, photos, tiny_model_dir, tiny_model, capsys):
    out = tmp_path / "emb"
    assert embed(photos, out, tiny_model_dir, "--shard-rows", "3") == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["embed.json", "part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    for shard in out.glob("*.parquet"):
        assert pq.read_schema(shard).remove_metadata() == shards.schema(tiny_model.dim)
    meta, vectors = rows(out)
    files = sorted(p for p in photos.rglob("*") if p.suffix in (".jpg", ".png"))
    assert [m["path"] for m in meta] == sorted(p.relative_to(photos).as_posix() for p in files)
    by_path = {p.relative_to(photos).as_posix(): p for p in files}
    for m in meta:
        assert m["sha256"] == hashlib.sha256(by_path[m["path"]].read_bytes()).hexdigest()
        assert (m["model"], m["precision"], m["decode"]) == (tiny_model.name, "fp32", "draft")
        assert m["revision"].startswith("local:") and str(tmp_path) not in m["revision"]
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-6)
    expected = encode_files(tiny_model, [by_path[m["path"]] for m in meta], "draft", Plan(0, 1))
    np.testing.assert_allclose(vectors, expected, atol=2e-6)
    record = json.loads((out / "embed.json").read_text())
    assert (record["decode"], record["engine"], record["images"], record["embedded"]) == ("draft", "local", 7, 7)
    assert str(photos) not in json.dumps(record) and str(tmp_path) not in json.dumps(record)
    assert shards.read_embeddings(out)[1].shape == (7, tiny_model.dim)


def test_interrupted_embed_resumes_without_redoing_shards(tmp_path, photos, tiny_model_dir, monkeypatch, capsys):
    import labclip.bulk
    import labclip.embed

    out, real_write, written = tmp_path / "emb", labclip.embed.write_shard, []

    def write_then_stop(path, table):
        if written:
            raise KeyboardInterrupt
        written.append(path)
        return real_write(path, table)

    monkeypatch.setattr(labclip.embed, "write_shard", write_then_stop)
    assert embed(photos, out, tiny_model_dir, "--shard-rows", "3") == 130
    assert sorted(p.name for p in out.iterdir()) == ["part-00000.parquet"]  # no temp file, no half shard
    first = (out / "part-00000.parquet").stat()
    monkeypatch.setattr(labclip.embed, "write_shard", real_write)
    decoded, real_decode = [], labclip.bulk.decode_file
    monkeypatch.setattr(labclip.bulk, "decode_file", lambda path, *a, **k: decoded.append(path) or real_decode(path, *a, **k))
    assert embed(photos, out, tiny_model_dir, "--shard-rows", "3") == 0
    assert len(decoded) == 4 and "3 of 7 images already in" in capsys.readouterr().err
    assert (out / "part-00000.parquet").stat().st_mtime_ns == first.st_mtime_ns
    meta, _ = rows(out)
    assert len(meta) == 7 == len({m["path"] for m in meta})
    decoded.clear()
    assert embed(photos, out, tiny_model_dir, "--shard-rows", "3") == 0 and decoded == []


def test_a_changed_file_is_embedded_again_and_its_old_row_dropped(tmp_path, photos, tiny_model_dir, capsys):
    tree, out = tmp_path / "tree", tmp_path / "emb"
    shutil.copytree(photos, tree)
    assert embed(tree, out, tiny_model_dir, "--shard-rows", "4") == 0
    Image.new("RGB", (50, 40), (10, 200, 30)).save(tree / "red.png")
    assert embed(tree, out, tiny_model_dir, "--shard-rows", "4") == 0
    meta, _ = rows(out)
    assert len(meta) == 7 and [m["path"] for m in meta].count("red.png") == 1
    (row,) = [m for m in meta if m["path"] == "red.png"]
    assert row["sha256"] == hashlib.sha256((tree / "red.png").read_bytes()).hexdigest()


def test_no_partial_shard_after_a_fault(tmp_path, photos, tiny_model_dir, monkeypatch):
    def half_then_fail(table, where, **kwargs):
        where.write(b"PAR1 half a shard")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pq, "write_table", half_then_fail)
    out = tmp_path / "emb"
    with pytest.raises(OSError, match="No space left"):
        embed(photos, out, tiny_model_dir)
    assert not out.exists() or list(out.iterdir()) == []


@pytest.mark.parametrize("case", ["not an image", "truncated", "no folder", "out is a file", "other decode"])
def test_bad_input_is_one_line_naming_it(tmp_path, photos, tiny_model_dir, capsys, case):
    tree, out = tmp_path / "tree", tmp_path / "emb"
    shutil.copytree(photos, tree)
    extra = []
    if case == "not an image":
        (tree / "fake.jpg").write_text("hello")
        named = "fake.jpg: not an image file Pillow can read"
    elif case == "truncated":
        data = (tree / "p0.jpg").read_bytes()
        (tree / "z.jpg").write_bytes(data[: len(data) // 2])
        named, extra = "z.jpg: unreadable or truncated image", ["--shard-rows", "100"]
    elif case == "no folder":
        tree, named = tmp_path / "missing", "missing: no such folder"
    elif case == "out is a file":
        out.write_text("x")
        named = "emb: --out must be a folder"
    else:
        assert embed(tree, out, tiny_model_dir) == 0
        capsys.readouterr()
        named, extra = "(decode draft → exact); use another --out folder", ["--decode", "exact"]
    before = sorted(out.iterdir()) if out.is_dir() else None
    assert embed(tree, out, tiny_model_dir, *extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("labclip: error: ") and named in err[-1], err
    assert (sorted(out.iterdir()) if out.is_dir() else None) == before  # nothing written


@pytest.mark.ray
def test_ray_engine_writes_the_local_engines_shards(tmp_path, photos, tiny_model_dir):
    """Same input, same shards: rows, hashes, identity and vectors. At batch size 1 each image is encoded alone
    on one torch thread in both engines, so the float32 arithmetic is the same and the vectors equal bit for
    bit; with larger batches Ray may cut batches elsewhere, which moves GEMM roundings in the last bits."""
    pytest.importorskip("ray.data")
    local, ray_out = tmp_path / "local", tmp_path / "ray"
    common = ["--shard-rows", "3", "--batch-size", "1"]
    assert embed(photos, local, tiny_model_dir, *common) == 0
    assert main(["embed", str(photos), "--out", str(ray_out), "--model", str(tiny_model_dir), "--engine", "ray",
                 "--workers", "1", *common]) == 0
    assert sorted(p.name for p in local.glob("*.parquet")) == sorted(p.name for p in ray_out.glob("*.parquet"))
    for name in sorted(p.name for p in local.glob("*.parquet")):
        a, b = pq.read_table(local / name), pq.read_table(ray_out / name)
        assert a.drop(["embedding"]).equals(b.drop(["embedding"]))
        assert np.array_equal(np.stack(a["embedding"].to_numpy(zero_copy_only=False)),
                              np.stack(b["embedding"].to_numpy(zero_copy_only=False)))
    assert json.loads((ray_out / "embed.json").read_text())["engine"] == "ray"


def test_ray_decode_tasks_carry_a_bad_file_as_its_one_line_error(tmp_path, photos, tiny_model):
    """What a Ray decoding task returns for a file that does not decode, checked without starting Ray."""
    from labclip.embed_ray import decode_batch, user_error

    data = (photos / "p0.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    batch = decode_batch({"index": np.arange(2), "path": np.array([str(photos / "p0.jpg"), str(tmp_path / "cut.jpg")])},
                         tiny_model.preprocess, "draft")
    assert batch["pixels"].shape == (2, 32, 32, 3) and batch["pixels"].dtype == np.uint8
    assert batch["error"][0] == "" and batch["error"][1].startswith(f"{tmp_path / 'cut.jpg'}: unreadable or truncated")
    wrapped = RuntimeError("ray::MapBatches()\nlabclip.errors.LabclipError: x.jpg: not an image file\n\nmore")
    assert str(user_error(wrapped)) == "x.jpg: not an image file"
    assert user_error(ValueError("not ours")) is None
    chained = RuntimeError("wrapped")
    chained.__cause__ = LabclipError("y.png: image file not found")
    assert str(user_error(chained)) == "y.png: image file not found"
