"""labclip search over embedding shards (the Parquet format of labclip embed), and labclip index."""

import hashlib
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from labclip.cli import main
from labclip.config import IMAGES_DIR
from labclip.errors import LabclipError
from labclip.index import (
    CALIBRATION_RECALL,
    INDEX_CARD,
    INDEX_FILE,
    VECTORS_FILE,
    ShardIndex,
    candidate_count,
    exact_search,
    index_search,
    load_index,
    read_shards,
    write_index,
)
from labclip.lab.provenance import model_record


def unit(rng, n, dim):
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def write_shard(path, names, vectors, model="org/model", revision="abc123", precision="fp32"):
    """A shard as labclip embed writes it (the shared format: path, sha256, model, revision, precision,
    decode, embedding as fixed_size_list<float32>)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    n, dim = vectors.shape
    table = pa.table({
        "path": pa.array(names, pa.string()),
        "sha256": pa.array([hashlib.sha256(name.encode()).hexdigest() for name in names], pa.string()),
        "model": pa.array([model] * n, pa.string()), "revision": pa.array([revision] * n, pa.string()),
        "precision": pa.array([precision] * n, pa.string()), "decode": pa.array(["exact"] * n, pa.string()),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel(), pa.float32()), dim),
    })
    pq.write_table(table, path)


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(code, out, err, *fragments):
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert lines[-1].startswith("labclip: error: ") and all(f in lines[-1] for f in fragments), err


def test_exact_search_equals_an_independent_argsort(tmp_path):
    rng = np.random.default_rng(1)
    x = unit(rng, 3000, 48)
    write_shard(tmp_path / "part-00000.parquet", [f"a/{i}.jpg" for i in range(1000)], x[:1000])
    write_shard(tmp_path / "part-00001.parquet", [f"b/{i}.jpg" for i in range(2000)], x[1000:])
    shards = read_shards(tmp_path)
    assert shards.paths[999] == "a/999.jpg" and shards.paths[1000] == "b/0.jpg"
    np.testing.assert_array_equal(shards.vectors, x)
    for q in unit(rng, 5, 48):
        rows, cosines = exact_search(shards.vectors, q, 10)
        expected = np.argsort(-(x.astype(np.float64) @ q.astype(np.float64)))[:10]
        np.testing.assert_array_equal(rows, expected)
        np.testing.assert_allclose(cosines, x[expected] @ q, rtol=1e-5)


def test_index_recall_at_10_against_exact_search(tmp_path):
    rng = np.random.default_rng(2)
    x = unit(rng, 5000, 64)
    write_shard(tmp_path / "part-00000.parquet", [f"{i}.jpg" for i in range(len(x))], x)
    shards = read_shards(tmp_path)
    card = write_index(shards)
    assert card["rows"] == 5000 and card["coarse"] and card["candidates"] < 5000 and card["recall_at_10"] >= 0.95
    assert (tmp_path / INDEX_FILE).is_file() and (tmp_path / VECTORS_FILE).is_file()
    index = load_index(read_shards(tmp_path, vectors=False))
    queries = unit(rng, 50, 64)  # drawn independently of the rows
    hits = []
    for q in queries:
        truth = set(np.argsort(-(x.astype(np.float64) @ q))[:10].tolist())
        rows, cosines = index_search(index, q, 10)
        np.testing.assert_allclose(cosines, x[rows] @ q, atol=1e-5)
        assert np.all(np.diff(cosines) <= 0)
        hits.append(len(truth & set(rows.tolist())) / 10)
    assert np.mean(hits) >= 0.95
    assert not list(tmp_path.glob(".*tmp"))


def test_candidate_count_grows_with_k_and_stops_at_the_collection():
    assert candidate_count(1024, 10, 10**6) == 1024
    assert candidate_count(1024, 1, 10**6) == 1024
    assert candidate_count(1024, 11, 10**6) == 2048
    assert candidate_count(1024, 100, 10**6) == 10240
    assert candidate_count(1024, 100, 5000) == 5000


def test_calibration_keeps_the_smallest_count_that_reaches_the_recall_and_the_coarse_pass_matters(tmp_path):
    rng = np.random.default_rng(5)
    x = unit(rng, 4000, 32)
    write_shard(tmp_path / "part-00000.parquet", [f"{i}.jpg" for i in range(len(x))], x)
    ladder = (16, 64, 256, 1024)
    card = write_index(read_shards(tmp_path), ladder=ladder)
    curve = {int(c): r for c, r in card["calibration"].items()}
    assert sorted(curve) == list(ladder) and all(a <= b for a, b in zip(curve.values(), list(curve.values())[1:]))
    reached = [c for c in ladder if curve[c] >= CALIBRATION_RECALL]
    assert card["candidates"] == (min(reached) if reached else max(ladder))
    assert card["recall_at_10"] == curve[card["candidates"]]
    index = load_index(read_shards(tmp_path))
    queries = unit(rng, 40, 32)
    truth = [set(np.argsort(-(x.astype(np.float64) @ q))[:10].tolist()) for q in queries]

    def recall(candidates):
        narrowed = ShardIndex(index.vectors, index.coarse, candidates)
        return np.mean([len(t & set(narrowed.search(q, 10)[0].tolist())) / 10 for q, t in zip(queries, truth)])

    assert recall(10) < 0.9 <= recall(card["candidates"])  # ten candidates are not enough: the rescoring matters


def test_an_index_of_an_older_format_or_with_a_missing_file_is_refused(tmp_path):
    rng = np.random.default_rng(6)
    write_shard(tmp_path / "part-00000.parquet", [f"{i}.jpg" for i in range(2000)], unit(rng, 2000, 16))
    write_index(read_shards(tmp_path))
    data = (tmp_path / VECTORS_FILE).read_bytes()
    (tmp_path / VECTORS_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(LabclipError, match=f"{VECTORS_FILE}: unreadable index; run labclip index"):
        load_index(read_shards(tmp_path, vectors=False))
    (tmp_path / VECTORS_FILE).write_bytes(data)
    (tmp_path / INDEX_FILE).write_bytes(b"not a faiss index")
    with pytest.raises(LabclipError, match=f"{INDEX_FILE}: unreadable index"):
        load_index(read_shards(tmp_path, vectors=False))
    (tmp_path / INDEX_FILE).unlink()
    with pytest.raises(LabclipError, match=f"stale.*{INDEX_FILE} is missing"):
        load_index(read_shards(tmp_path, vectors=False))
    (tmp_path / INDEX_CARD).write_text('{"format": 1, "library": "usearch"}\n', encoding="utf-8")
    with pytest.raises(LabclipError, match="stale.*another labclip version"):
        load_index(read_shards(tmp_path, vectors=False))


def test_stale_index_is_refused_then_rebuilt(tmp_path, capsys):
    rng = np.random.default_rng(3)
    x = unit(rng, 300, 16)
    names = [f"{i}.jpg" for i in range(300)]
    write_shard(tmp_path / "part-00000.parquet", names, x)
    write_index(read_shards(tmp_path))
    assert load_index(read_shards(tmp_path)) is not None
    x[7] = unit(rng, 1, 16)[0]
    write_shard(tmp_path / "part-00000.parquet", names, x)
    with pytest.raises(LabclipError, match="stale.*part-00000.parquet changed"):
        load_index(read_shards(tmp_path))
    write_shard(tmp_path / "part-00001.parquet", ["new.jpg"], unit(rng, 1, 16))
    with pytest.raises(LabclipError, match="stale"):
        load_index(read_shards(tmp_path))
    code, _, err = run(capsys, "index", tmp_path)
    assert code == 0 and "recall@10" in err
    index = load_index(read_shards(tmp_path))
    assert index is not None and len(index) == 301 and index.coarse is None  # below the smallest candidate count
    code, _, err = run(capsys, "index", tmp_path)
    assert code == 0 and "is current" in err


def test_shards_of_two_models_or_a_bad_column_are_refused(tmp_path):
    rng = np.random.default_rng(4)
    write_shard(tmp_path / "part-00000.parquet", ["a.jpg"], unit(rng, 1, 8))
    write_shard(tmp_path / "part-00001.parquet", ["b.jpg"], unit(rng, 1, 8), model="other/model")
    with pytest.raises(LabclipError, match="part-00001.parquet: the shards hold embeddings of several models"):
        read_shards(tmp_path)
    (tmp_path / "part-00001.parquet").unlink()
    write_shard(tmp_path / "part-00001.parquet", ["b.jpg"], 2 * unit(rng, 1, 8))
    with pytest.raises(LabclipError, match=r"part-00001.parquet: row 0 \(b.jpg\) is not L2-normalised"):
        read_shards(tmp_path)
    pq.write_table(pa.table({"path": ["c.jpg"]}), tmp_path / "part-00001.parquet")
    with pytest.raises(LabclipError, match="part-00001.parquet: not an embedding shard"):
        read_shards(tmp_path)


@pytest.fixture
def embedded(tmp_path, tiny_model_dir):
    """A folder of photos and its shards, embedded with the tiny model the way labclip embed records it."""
    from labclip import load_model

    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("cat.png", "red_car.png", "pizza.png", "horse.png", "coffee.png"):
        shutil.copy(IMAGES_DIR / name, photos / name)
    model = load_model(tiny_model_dir, cache=False, precision="fp32")
    record = model_record(model)
    files = sorted(photos.iterdir())
    emb = tmp_path / "emb"
    emb.mkdir()
    write_shard(emb / "part-00000.parquet", [f.name for f in files], model.encode_images(files),
                model=record["id"], revision=record["revision"])
    return photos, emb


def test_search_over_shards_ranks_as_the_folder_search(capsys, tiny_model_dir, embedded):
    photos, emb = embedded
    common = ["a red car", "--model", tiny_model_dir, "--no-cache", "--precision", "fp32", "--top-k", "5"]
    code, from_folder, _ = run(capsys, "search", photos, *common)
    assert code == 0
    code, from_shards, err = run(capsys, "search", emb, *common)
    assert code == 0 and "exact" in err
    assert from_shards == from_folder


def test_search_refuses_another_model(capsys, tiny_model_dir, embedded, tmp_path):
    _, emb = embedded
    other = tmp_path / "emb2"
    other.mkdir()
    table = pq.read_table(emb / "part-00000.parquet")
    vectors = np.stack(table.column("embedding").to_pylist())
    write_shard(other / "part-00000.parquet", table.column("path").to_pylist(), vectors, model="someone/else-clip")
    one_error_line(*run(capsys, "search", other, "a cat", "--model", tiny_model_dir, "--no-cache"),
                   "embedded with someone/else-clip")
    record_revision = table.column("revision")[0].as_py()
    write_shard(other / "part-00000.parquet", table.column("path").to_pylist(), vectors,
                model=table.column("model")[0].as_py(), revision="0" * 40)
    one_error_line(*run(capsys, "search", other, "a cat", "--model", tiny_model_dir, "--no-cache"),
                   f"at revision {'0' * 40}", f"revision {record_revision}")


def test_search_with_a_stale_index_is_one_error_line(capsys, tiny_model_dir, embedded):
    _, emb = embedded
    common = ["a cat", "--model", tiny_model_dir, "--no-cache"]
    assert run(capsys, "index", emb)[0] == 0
    code, with_index, err = run(capsys, "search", emb, *common)
    assert code == 0 and "index: 5 candidates ranked by exact cosine" in err
    assert with_index == run(capsys, "search", emb, *common, "--exact")[1]
    table = pq.read_table(emb / "part-00000.parquet")
    pq.write_table(table.slice(0, 4), emb / "part-00000.parquet")
    one_error_line(*run(capsys, "search", emb, *common), "stale", "labclip index")
    assert (emb / INDEX_CARD).is_file()


def test_search_through_a_coarse_index_answers_as_exact_search(capsys, tiny_model_dir, embedded, tmp_path):
    _, emb = embedded
    table = pq.read_table(emb / "part-00000.parquet")
    model, revision = table.column("model")[0].as_py(), table.column("revision")[0].as_py()
    rng = np.random.default_rng(7)
    big = tmp_path / "big"
    big.mkdir()
    dim = len(table.column("embedding")[0].as_py())
    write_shard(big / "part-00000.parquet", [f"{i}.jpg" for i in range(3000)], unit(rng, 3000, dim),
                model=model, revision=revision)
    code, _, err = run(capsys, "index", big)
    assert code == 0 and "1024 candidates a query" in err
    common = ["a cat", "--model", tiny_model_dir, "--no-cache", "--top-k", "5"]
    code, with_index, err = run(capsys, "search", big, *common)
    assert code == 0 and "index: 1024 candidates" in err
    assert with_index == run(capsys, "search", big, *common, "--exact")[1]

