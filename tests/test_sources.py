"""`python -m train.sources`: a tiny git repository as the public source, cloned bare as a fetched mirror is."""

import io
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from train.config import parse_args
from train.data import load_sources
from train.sources import main

OWNER_NAME = "someone/faces"
GUARD = textwrap.dedent("""\
    # Stands in for holdout_guard.py: lists every image whose name holds "hidden", as the real one does.
    import os, sys
    folder, exclude = sys.argv[1], sys.argv[3]
    files = [os.path.join(r, f) for r, _, fs in os.walk(folder) for f in sorted(fs) if f.endswith((".jpg", ".png"))]
    hits = [p for p in files if "hidden" in os.path.basename(p)]
    open(exclude, "w").write("".join(p + "\\n" for p in hits))
    print(f"{len(files)} images checked: {len(hits)} near-duplicates of hidden evaluation images", file=sys.stderr)
    sys.exit(1 if hits else 0)
    """)


def picture(seed, size=160):
    """A distinct image per seed (random blocks: different perceptual hashes)."""
    rng = np.random.RandomState(seed)
    blocks = rng.rand(8, 8, 3) * 255
    return Image.fromarray(np.kron(blocks, np.ones((size // 8, size // 8, 1))).astype(np.uint8))


def encoded(img, fmt, **kwargs):
    buffer = io.BytesIO()
    img.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def git(cwd, *args):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=cwd, check=True,
                   capture_output=True)


def commit_files(root, files):
    """A git repository holding `files` ({path: bytes}); returns the commit id."""
    os.makedirs(root, exist_ok=True)
    if not os.path.isdir(os.path.join(root, ".git")):
        git(root, "init", "-q")
    for path, data in files.items():
        os.makedirs(os.path.dirname(os.path.join(root, path)), exist_ok=True)
        with open(os.path.join(root, path), "wb") as f:
            f.write(data)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "images")
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()


def mirror(work, mirrors, repo):
    """`git clone --bare` into the layout the fetch tool leaves: <mirrors>/<owner>+<name>/repo."""
    target = os.path.join(mirrors, repo.replace("/", "+"), "repo")
    subprocess.run(["git", "clone", "-q", "--bare", work, target], check=True, capture_output=True)


FACES = {
    "data/real/a.jpg": encoded(picture(1), "JPEG", quality=90),
    "data/real/b.jpg": encoded(picture(2), "JPEG", quality=90),
    "data/real/nested/c.jpg": encoded(picture(3), "JPEG", quality=90),
    "data/real/hidden_d.jpg": encoded(picture(4), "JPEG", quality=90),  # the guard lists it
    "data/real/tiny.jpg": encoded(picture(5, size=64), "JPEG"),          # under --min-size
    "data/real/notes.txt": b"not an image",
    "data/fake/x.png": encoded(picture(11), "PNG"),
    "data/fake/y.gif": encoded(picture(12).convert("P"), "GIF"),          # re-encoded to PNG
    "data/fake/mislabelled.jpg": encoded(picture(13), "PNG"),            # a PNG named .jpg: kept, named .png
    "data/fake/pointer.png": b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 12345\n",
    "data/fake/broken.jpg": encoded(picture(14), "JPEG")[:300],           # truncated
}


def toml_value(value):
    """A value as TOML: JSON's strings, numbers and lists are TOML too; a dict becomes an inline table."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(value, ensure_ascii=False)


def manifest_text(entries):
    lines = []
    for entry in entries:
        lines.append("[[source]]")
        lines += [f"{key} = {toml_value(value)}" for key, value in entry.items()]
        lines.append("")
    return "\n".join(lines)


def faces_entry(commit, **overrides):
    return {"name": "faces", "repo": OWNER_NAME, "commit": commit, "real": ["data/real"], "fake": ["data/fake"],
            "family": "StyleGAN 2", "collection": "test photos", "resolution": "160x160",
            "licence": "CC BY 4.0", **overrides}


@pytest.fixture
def world(tmp_path):
    """(tmp_path, mirrors folder, commit of the faces repo, guard script path)."""
    commit = commit_files(tmp_path / "work" / "faces", FACES)
    mirrors = tmp_path / "mirrors"
    mirror(tmp_path / "work" / "faces", mirrors, OWNER_NAME)
    guard = tmp_path / "guard.py"
    guard.write_text(GUARD)
    return tmp_path, mirrors, commit, guard


def build(capsys, world, entries, *extra):
    tmp_path, mirrors, _, guard = world
    manifest = tmp_path / "sources.toml"
    manifest.write_text(manifest_text(entries))
    out = tmp_path / "pool"
    code = main(["--manifest", str(manifest), "--mirrors", str(mirrors), "--out", str(out), "--guard", str(guard),
                 *map(str, extra)])
    captured = capsys.readouterr()
    report = json.loads((out / "report.json").read_text()) if (out / "report.json").exists() else None
    return code, captured.out, captured.err, out, report


def listing(folder):
    return sorted(os.path.relpath(os.path.join(r, f), folder) for r, _, fs in os.walk(folder) for f in fs)


def test_materialises_a_source_keeping_bytes_and_counting_every_skip(world, capsys):
    code, out, err, pool, report = build(capsys, world, [faces_entry(world[2])])
    assert code == 0, err
    assert listing(pool / "faces") == [
        "fake/data__fake__mislabelled.png", "fake/data__fake__x.png", "fake/data__fake__y.png",
        "real/data__real__a.jpg", "real/data__real__b.jpg", "real/data__real__nested__c.jpg", "source.json"]
    # Original bytes, never re-encoded, for the formats training reads; the GIF alone became a PNG.
    assert (pool / "faces/real/data__real__a.jpg").read_bytes() == FACES["data/real/a.jpg"]
    assert (pool / "faces/fake/data__fake__mislabelled.png").read_bytes() == FACES["data/fake/mislabelled.jpg"]
    assert Image.open(pool / "faces/fake/data__fake__y.png").format == "PNG"
    assert listing(pool / "_guarded") == ["faces/real/data__real__hidden_d.jpg"]

    classes = report["sources"]["faces"]["classes"]
    assert classes["real"] == {"found": 5, "written": 4, "too small": 1, "guard dropped": 1, "kept": 3}
    assert classes["fake"] == {"found": 5, "written": 2, "re-encoded": 1, "LFS pointer": 1, "unreadable": 1, "kept": 3}
    assert report["sources"]["faces"]["guard_checked"] == 7
    assert report["sources"]["faces"]["commit"] == world[2]
    assert report["totals"]["images"]["kept"] == 6 and report["errors"] == []
    facts = json.loads((pool / "faces/source.json").read_text())
    assert facts["license"] == "CC BY 4.0" and facts["family"] == "StyleGAN 2" and facts["commit"] == world[2]
    assert out.splitlines()[2].split()[:6] == ["faces", "real", "test", "photos", "5", "4"]
    assert "1 sources with images kept, 6 images kept of 10 found; guard: 7 checked, 1 dropped; 0 duplicates dropped" in out

    data = load_sources([str(pool / "faces")])  # training reads the folder as it is (source.json is ignored)
    assert sorted(zip(data["label"], data["source"])) == [(0, "faces")] * 3 + [(1, "faces")] * 3
    # python -m train --pool: every source folder the pool built is training data (not _guarded/ or _duplicates/)
    data_args = parse_args(["--pool", str(pool), "--output", str(pool / "run")])[0]
    assert data_args.data == [str(pool / "faces")]


def test_bad_entries_get_one_line_each_and_the_rest_still_build(world, capsys):
    commit = world[2]
    entries = [
        faces_entry("0123456789abcdef0123", name="bad-commit"),
        faces_entry(commit, name="bad-path", real=["data/nowhere"]),
        faces_entry(commit, name="no-repo", repo="someone/elsewhere"),
        faces_entry(commit, name="bad-family", family="GAN-ish"),
        faces_entry(commit, name="good", fake=[]),
    ]
    code, out, err, pool, report = build(capsys, world, entries)
    assert code == 1
    errors = [line for line in err.splitlines() if "error" in line]
    assert errors == [
        "train.sources: error: source 'bad-family': family 'GAN-ish' is not one of: " + ", ".join(
            __import__("train.sources", fromlist=["FAMILIES"]).FAMILIES) + ".",
        f"train.sources: error: source 'bad-commit': commit 0123456789abcdef0123 is not in {OWNER_NAME} "
        f"({world[1]}/someone+faces/repo): fix the commit, or fetch the repository again.",
        f"train.sources: error: source 'bad-path': path 'data/nowhere' (real) holds no files in {OWNER_NAME} at "
        f"{commit[:12]}: fix the path.",
        f"train.sources: error: source 'no-repo': repository someone/elsewhere is not in {world[1]}: fetch it there, "
        "or pass --clone.",
    ]
    assert sorted(report["sources"]) == ["good"]
    assert report["sources"]["good"]["classes"]["real"]["kept"] == 3
    assert len(report["errors"]) == 4


def test_duplicates_across_sources_are_dropped_from_the_later_one(world, capsys):
    tmp_path, mirrors, commit, _ = world
    copies = {
        "pics/same_bytes.jpg": FACES["data/real/a.jpg"],                                   # exact copy
        "pics/resized.jpg": encoded(picture(2).resize((200, 200)), "JPEG", quality=70),  # near duplicate
        "pics/new.jpg": encoded(picture(40), "JPEG"),
    }
    other = commit_files(tmp_path / "work" / "copies", copies)
    mirror(tmp_path / "work" / "copies", mirrors, "other/copies")
    entries = [faces_entry(commit), {"name": "copies", "repo": "other/copies", "commit": other, "real": ["pics"],
                                     "collection": "copied photos", "licence": "unknown"}]
    code, _, err, pool, report = build(capsys, world, entries)
    assert code == 0, err
    assert listing(pool / "copies") == ["real/pics__new.jpg", "source.json"]
    assert listing(pool / "_duplicates") == ["copies/real/pics__resized.jpg", "copies/real/pics__same_bytes.jpg"]
    assert report["sources"]["copies"]["classes"]["real"] == {"found": 3, "written": 3, "duplicates dropped": 2,
                                                             "kept": 1}
    assert report["sources"]["copies"]["duplicates_of"] == {"faces": 2}

    # A rerun of the first source alone decides again from scratch: the same counts, the same files.
    code, _, err, pool, again = build(capsys, world, entries, "--only", "faces")
    assert code == 0, err
    assert again["sources"]["copies"]["classes"] == report["sources"]["copies"]["classes"]
    assert listing(pool / "copies") == ["real/pics__new.jpg", "source.json"]

    # A source taken out of the manifest leaves the report, and its folder is pointed out, not deleted.
    code, _, err, pool, last = build(capsys, world, entries[:1])
    assert code == 0 and sorted(last["sources"]) == ["faces"]
    assert f"sources: warning: {pool / 'copies'} is not in {world[0] / 'sources.toml'} any more" in err


def test_against_folders_win_over_the_pool(world, capsys):
    shared = world[0] / "shared" / "set"
    os.makedirs(shared / "real")
    (shared / "real" / "copy.jpg").write_bytes(FACES["data/real/b.jpg"])
    code, _, err, pool, report = build(capsys, world, [faces_entry(world[2])], "--against", shared)
    assert code == 0, err
    assert report["sources"]["faces"]["duplicates_of"] == {"against:set": 1}
    assert not (pool / "faces/real/data__real__b.jpg").exists()


def test_max_per_source_takes_a_fixed_sample(world, capsys):
    _, _, _, pool, first = build(capsys, world, [faces_entry(world[2], fake=[])], "--max-per-source", 2)
    names = listing(pool / "faces")
    _, _, _, pool, second = build(capsys, world, [faces_entry(world[2], fake=[])], "--max-per-source", 2)
    assert listing(pool / "faces") == names and first["sources"]["faces"]["classes"]["real"]["found"] == 2


def test_globs_and_excludes(world, capsys):
    entry = faces_entry(world[2], real=["data/real/*.jpg"], exclude=["**/b.jpg"], fake=[])
    _, _, err, pool, report = build(capsys, world, [entry])
    assert listing(pool / "faces/real") == ["data__real__a.jpg"], err  # nested/ and b.jpg left out, tiny too small
    entry = faces_entry(world[2], real=["data/**/c.jpg"], fake=["data/fake/?.png"])
    _, _, err, pool, report = build(capsys, world, [entry])
    assert listing(pool / "faces") == ["fake/data__fake__x.png", "real/data__real__nested__c.jpg", "source.json"]
    entry = faces_entry(world[2], real=["d*/real/nest*"], fake=["data/fake/?.png"])  # a glob naming a folder
    _, _, err, pool, report = build(capsys, world, [entry])
    assert listing(pool / "faces") == ["fake/data__fake__x.png", "real/data__real__nested__c.jpg", "source.json"]


def test_unreadable_manifest_and_unknown_only_are_one_line(world, capsys, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[[source]\nname = 'x'")
    assert main(["--manifest", str(bad), "--guard", "none", "--out", str(tmp_path / "p")]) == 2
    assert capsys.readouterr().err.startswith(f"train.sources: error: {bad} is not valid TOML")
    code, _, err, _, _ = build(capsys, world, [faces_entry(world[2])], "--only", "nobody")
    assert code == 2 and err.strip() == (f"train.sources: error: --only names ['nobody'], not in "
                                         f"{world[0] / 'sources.toml'} (its sources: faces).")


def test_missing_guard_is_refused(world, capsys, tmp_path):
    manifest = tmp_path / "sources.toml"
    manifest.write_text(manifest_text([faces_entry(world[2])]))
    with pytest.raises(SystemExit) as exit_info:
        main(["--manifest", str(manifest), "--guard", str(tmp_path / "nope.py")])
    assert exit_info.value.code == 2
    assert f"no guard at {tmp_path / 'nope.py'}: pass --guard PATH" in capsys.readouterr().err


def test_docs_table_lists_every_source_with_its_licence(world, capsys, tmp_path):
    build(capsys, world, [faces_entry(world[2])])
    docs = tmp_path / "sources.md"
    code, _, _, _, _ = build(capsys, world, [faces_entry(world[2])], "--docs", docs)
    text = docs.read_text()
    assert code == 0
    assert f"| `faces` | real | test photos | 160x160 | [someone/faces](https://github.com/someone/faces) @ " \
           f"`{world[2][:10]}` | 3 | CC BY 4.0 |" in text
    assert "guard checked 7 and dropped 1" in text


def test_help_explains_itself():
    result = subprocess.run([sys.executable, "-m", "train.sources", "--help"], capture_output=True, text=True,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert result.returncode == 0
    assert "Build the training pool from public git repositories" in result.stdout
    assert "--max-per-source" in result.stdout and "holdout_guard.py" in result.stdout


def test_the_data_report_covers_a_built_pool_by_family_and_collection(world, capsys):
    from train.explore import main as explore_main

    tmp_path, mirrors, commit, _ = world
    other = commit_files(tmp_path / "work" / "more", {
        **{f"gen/{i}.png": encoded(picture(60 + i), "PNG") for i in range(8)},
        **{f"photos/{i}.png": encoded(picture(80 + i), "PNG") for i in range(8)}})
    mirror(tmp_path / "work" / "more", mirrors, "other/more")
    entries = [faces_entry(commit), {"name": "more", "repo": "other/more", "commit": other, "fake": ["gen"],
                                     "real": ["photos"], "family": "Flux", "collection": "phone photos",
                                     "licence": "MIT"}]
    code, _, err, pool, _ = build(capsys, world, entries)
    assert code == 0, err
    # What the guard and the deduplication set aside is not a source: only folders with a source.json are.
    assert explore_main(["--pool", str(pool), "--output", str(tmp_path / "report"), "--samples", "1"]) == 0, \
        capsys.readouterr().err
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["sources"] == ["faces", "more"]
    assert summary["source_facts"]["more"]["family"] == "Flux"
    report = (tmp_path / "report" / "report.md").read_text()
    assert "| faces | StyleGAN 2 / test photos | 3 | 3 | CC BY 4.0 | [someone/faces](https://github.com/someone/faces) @ " \
           f"`{commit[:10]}` |" in report
    assert "| Flux | 8 | more |" in report and "| StyleGAN 2 | 3 | faces |" in report
    assert "| phone photos | 8 | more |" in report and "| test photos | 3 | faces |" in report


def test_one_person_stays_in_one_split_group(world, capsys):
    from train.data import scrub, split

    tmp_path, mirrors, commit, _ = world
    people = {f"people/{name}_{i}.jpg": encoded(picture(100 + 10 * k + i), "JPEG")
              for k, name in enumerate(["alice", "bob", "carol", "dave", "erin", "frank"]) for i in range(3)}
    faces = {f"gen/{i}.png": encoded(picture(200 + i), "PNG") for i in range(18)}
    other = commit_files(tmp_path / "work" / "people", {**people, **faces})
    mirror(tmp_path / "work" / "people", mirrors, "other/people")
    entry = {"name": "people", "repo": "other/people", "commit": other, "real": ["people"], "fake": ["gen"],
             "family": "SDXL", "collection": "portraits", "licence": "CC0", "identity": r"people/([a-z]+)_\d"}
    code, _, err, pool, report = build(capsys, world, [entry])
    assert code == 0, err
    assert report["sources"]["people"]["identities"] == 6
    table = json.loads((pool / "people" / "identities.json").read_text())
    assert table["real/people__alice_0.jpg"] == "alice" and len(table) == 18  # the fakes name nobody

    kept, _ = scrub(load_sources([str(pool / "people")]), min_size=128)
    by_person = {}
    for image, group in zip(kept["image"], kept["group"]):
        name = os.path.basename(image["path"])
        if name.startswith("people__"):
            by_person.setdefault(name.split("__")[1].split("_")[0], set()).add(group)
    assert sorted(by_person) == ["alice", "bob", "carol", "dave", "erin", "frank"]
    assert all(len(groups) == 1 for groups in by_person.values())
    assert len(set.union(*by_person.values())) == 6
    splits = split(kept, seed=0)
    for person in by_person:
        assert sum(any(person in p["path"] for p in splits[n]["image"]) for n in splits) == 1


def test_a_labels_csv_gives_each_image_its_class_and_keeps_a_swap_with_its_original(world, capsys):
    from train.data import scrub

    tmp_path, mirrors, _, _ = world
    faces = {f"crops/{name}.jpg": encoded(picture(300 + i), "JPEG") for i, name in enumerate("abcdefgh")}
    rows = ["clip,width,label,original", "a.mp4,224,REAL,", "b.mp4,224,REAL,", "c.mp4,224,FAKE,a.mp4",
            "d.mp4,224,FAKE,a.mp4", "e.mp4,224,FAKE,b.mp4", "f.mp4,224,UNSURE,", "zz.mp4,224,FAKE,b.mp4"]
    commit = commit_files(tmp_path / "work" / "swaps", {**faces, "meta/labels.csv": "\n".join(rows).encode()})
    mirror(tmp_path / "work" / "swaps", mirrors, "other/swaps")
    labels = {"csv": "meta/labels.csv", "file": "clip", "label": "label", "fake": "FAKE", "real": "REAL",
              "group": "original"}
    entry = {"name": "swaps", "repo": "other/swaps", "commit": commit, "real": ["crops"], "fake": ["crops"],
             "family": "face swap", "collection": "actors", "licence": "CC0", "labels": labels}
    code, _, err, pool, report = build(capsys, world, [entry])
    assert code == 0, err
    # f (no class the table knows), g and h (no row) are left out; zz (no image) is nobody's.
    assert listing(pool / "swaps") == ["fake/crops__c.jpg", "fake/crops__d.jpg", "fake/crops__e.jpg",
                                       "identities.json", "real/crops__a.jpg", "real/crops__b.jpg", "source.json"]
    table = json.loads((pool / "swaps" / "identities.json").read_text())
    assert table == {"real/crops__a.jpg": "a", "fake/crops__c.jpg": "a", "fake/crops__d.jpg": "a",
                     "real/crops__b.jpg": "b", "fake/crops__e.jpg": "b"}
    kept, _ = scrub(load_sources([str(pool / "swaps")]), min_size=128)
    group = {os.path.basename(i["path"]): g for i, g in zip(kept["image"], kept["group"])}
    assert group["crops__a.jpg"] == group["crops__c.jpg"] == group["crops__d.jpg"] != group["crops__b.jpg"]
    assert group["crops__b.jpg"] == group["crops__e.jpg"]

    # A column the CSV lacks, or a table missing a key, is one line naming the entry.
    bad_column = {**entry, "name": "badcol", "labels": {**labels, "label": "verdict"}}
    bad_table = {**entry, "name": "badtable", "labels": {"csv": "meta/labels.csv"}}
    code, _, err, _, _ = build(capsys, world, [bad_column, bad_table, faces_entry(world[2])])
    assert code == 1
    assert "train.sources: error: source 'badcol': labels csv 'meta/labels.csv' has no column 'verdict'" in err
    assert "train.sources: error: source 'badtable': labels misses ['fake', 'file', 'label', 'real']" in err


def test_the_shipped_manifest_is_valid():
    # Every entry of train/sources.toml parses (a bad one would be skipped with a line, silently shrinking the pool).
    from train.sources import DEFAULT_MANIFEST, load_manifest

    sources, errors = load_manifest(DEFAULT_MANIFEST)
    assert errors == []
    assert len({s.name for s in sources}) == len(sources) and all(s.licence for s in sources)


def test_a_bad_identity_pattern_names_the_entry(world, capsys):
    code, _, err, _, _ = build(capsys, world, [faces_entry(world[2], name="bad", identity="no group"),
                                               faces_entry(world[2])])
    assert code == 1
    assert "train.sources: error: source 'bad': identity must be a regex with one (group) naming the person" in err


def test_the_model_card_states_a_pool_source_and_its_licence(world, capsys):
    from deepfake_detector.card import limitations_text, training_data

    _, _, _, pool, report = build(capsys, world, [faces_entry(world[2], what="test faces")])
    assert report["totals"]["families"] == {"StyleGAN 2": 3} and report["totals"]["collections"] == {"test photos": 3}
    facts = json.loads((pool / "faces" / "source.json").read_text())
    metrics = {"data": {"sources": [str(pool / "faces")], "about": {"faces": facts}}}  # as train/loop.py writes it
    text = training_data(metrics)
    assert f"- `faces`: test faces ({OWNER_NAME} @ {world[2][:10]}). Licence: CC BY 4.0." in text
    assert "Fakes it has seen in training: StyleGAN 2 fakes." in limitations_text(metrics)


def test_clone_fetches_a_repository_found_in_no_mirror(world, capsys):
    tmp_path, _, commit, guard = world
    clones = tmp_path / "clones"
    entry = faces_entry(commit, url=f"file://{tmp_path / 'work' / 'faces'}")  # stands in for https://github.com/…
    manifest = tmp_path / "sources.toml"
    manifest.write_text(manifest_text([entry]))
    argv = ["--manifest", str(manifest), "--mirrors", str(clones), "--out", str(tmp_path / "pool"), "--guard", str(guard)]
    assert main(argv) == 1  # without --clone it says where it looked
    assert f"repository {OWNER_NAME} is not in {clones}: fetch it there, or pass --clone." in capsys.readouterr().err
    assert main(argv + ["--clone"]) == 0, capsys.readouterr().err
    assert os.path.isdir(clones / "someone+faces.git")
    report = json.loads((tmp_path / "pool" / "report.json").read_text())
    assert report["sources"]["faces"]["git_dir"] == str(clones / "someone+faces.git")
    assert report["sources"]["faces"]["classes"]["real"]["kept"] == 3
