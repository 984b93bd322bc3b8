"""`python -m train.explore`: the report's files, its numbers, the shortcut warning, and bad input."""

import io
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
from PIL import Image

from helpers import make_image_folder
from train.explore import FIGURES, jpeg_quality, main

PER_CLASS = 10  # per source and class: 15 % each for test and validation -> 2 + 2, and 6 for training


def explore(capsys, *argv):
    """Run the CLI in this process: (exit code, stdout, stderr)."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse-level errors exit from parse_args
        code = e.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def read_report(output):
    with open(output / "summary.json") as f:
        summary = json.load(f)
    return summary, (output / "report.md").read_text()


def resave(folder, label, **save_kwargs):
    """Re-encode every image of one class folder (format from the suffix, e.g. suffix='.png')."""
    suffix = save_kwargs.pop("suffix", ".jpg")
    for name in sorted(os.listdir(folder / label)):
        path = folder / label / name
        img = Image.open(path).convert("RGB")
        os.remove(path)
        img.save(path.with_suffix(suffix), **save_kwargs)


@pytest.fixture
def two_sources(tmp_path):
    """Two sources of distinct synthetic images, both classes JPEG q92 4:2:0, 160x160."""
    return (make_image_folder(tmp_path / "alpha", per_class=PER_CLASS, seed=0),
            make_image_folder(tmp_path / "beta", per_class=PER_CLASS, seed=1))


def test_writes_every_file_and_exact_counts(two_sources, tmp_path, capsys):
    alpha, beta = two_sources
    output = tmp_path / "report"
    code, out, err = explore(capsys, "--data", alpha, "--data", beta, "--output", output)
    assert code == 0, err
    summary, report = read_report(output)

    no_duplicates = set(FIGURES) - {"duplicates.png"}
    assert set(os.listdir(output)) == no_duplicates | {"report.md", "summary.json"}
    assert set(summary["figures"]) == no_duplicates
    assert set(re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)) == no_duplicates  # every figure shown, none missing

    both = {"fake": PER_CLASS, "real": PER_CLASS}
    assert summary["sources"] == ["alpha", "beta"]
    assert (summary["images_loaded"], summary["images_kept"]) == (40, 40)
    assert summary["loaded"] == summary["kept"] == {"alpha": both, "beta": both}
    assert summary["splits"] == {"train": {"fake": 12, "real": 12}, "validation": {"fake": 4, "real": 4},
                                 "test": {"fake": 4, "real": 4}}
    assert summary["splits_by_source"]["test"] == {"alpha": {"fake": 2, "real": 2}, "beta": {"fake": 2, "real": 2}}
    assert summary["dropped_by_reason"] == {}
    assert summary["duplicates"]["exact_groups"] == summary["duplicates"]["near_groups"] == 0

    fake = summary["per_source"]["alpha"]["fake"]
    assert fake["images"] == PER_CLASS
    assert fake["formats"] == {"JPEG 4:2:0": PER_CLASS}
    assert fake["jpeg_quality"]["values"] == {"92": PER_CLASS}  # make_image_folder saves at quality=92
    assert fake["jpeg_quality"]["standard_table_share"] == 1.0
    assert fake["pixel_sizes"] == {"160x160": PER_CLASS}
    assert summary["per_source"]["all sources"]["real"]["images"] == 2 * PER_CLASS
    sampled = summary["samples"]["alpha/fake"]
    assert len(sampled) == 8 and all(name.startswith("alpha/fake/") for name in sampled)


def test_same_encoding_gives_no_warning(two_sources, tmp_path, capsys):
    output = tmp_path / "report"
    code, _, err = explore(capsys, "--data", two_sources[0], "--output", output)
    assert code == 0
    summary, report = read_report(output)
    assert summary["warnings"] == []
    assert "WARNING" not in report and "WARNING" not in err
    assert "**No shortcut found:**" in report
    assert not any(check.get("differs") for check in summary["per_source"]["alpha"]["checks"].values())


def test_png_fakes_and_jpeg_reals_warn(tmp_path, capsys):
    data = make_image_folder(tmp_path / "mixed", per_class=PER_CLASS)
    resave(tmp_path / "mixed", "fake", suffix=".png")
    output = tmp_path / "report"
    code, _, err = explore(capsys, "--data", data, "--output", output)
    assert code == 0
    summary, report = read_report(output)
    assert summary["per_source"]["mixed"]["fake"]["formats"] == {"PNG": PER_CLASS}
    assert summary["per_source"]["mixed"]["checks"]["file format"]["differs"]
    assert len(summary["warnings"]) == 1
    assert summary["warnings"][0].startswith("mixed: file format differs between the classes (fake: PNG 100%; "
                                             "real: JPEG 4:2:0 100%)")
    assert "**⚠ WARNING: fakes and reals differ in how they are stored.**" in report
    assert summary["warnings"][0] in report
    assert "WARNING: mixed: file format differs" in err


def test_jpeg_quality_gap_warns(tmp_path, capsys):
    data = make_image_folder(tmp_path / "requality", per_class=PER_CLASS)
    resave(tmp_path / "requality", "fake", quality=95)
    resave(tmp_path / "requality", "real", quality=75)
    output = tmp_path / "report"
    assert explore(capsys, "--data", data, "--output", output)[0] == 0
    summary, report = read_report(output)
    checks = summary["per_source"]["requality"]["checks"]
    assert not checks["file format"]["differs"]
    assert checks["JPEG quality"]["differs"] and checks["JPEG quality"]["median_gap"] == 20
    assert [w.split(" (")[0] for w in summary["warnings"]] == ["requality: JPEG quality differs between the classes"]
    assert "median q95" in summary["warnings"][0] and "median q75" in summary["warnings"][0]


def test_pooling_differently_encoded_sources_warns_on_the_pooled_row(tmp_path, capsys):
    """Each source is uniform inside, but one is mostly fakes at q75 and the other mostly reals at q95."""
    mostly_fake = make_image_folder(tmp_path / "mostly-fake", per_class=12, seed=0)
    mostly_real = make_image_folder(tmp_path / "mostly-real", per_class=12, seed=1)
    for folder, label in ((mostly_fake, "real"), (mostly_real, "fake")):
        for name in sorted(os.listdir(os.path.join(folder, label)))[3:]:
            os.remove(os.path.join(folder, label, name))
    for label in ("fake", "real"):
        resave(tmp_path / "mostly-fake", label, quality=75)
        resave(tmp_path / "mostly-real", label, quality=95)
    output = tmp_path / "report"
    assert explore(capsys, "--data", mostly_fake, "--data", mostly_real, "--output", output)[0] == 0
    summary, _ = read_report(output)
    assert summary["kept"] == {"mostly-fake": {"fake": 12, "real": 3}, "mostly-real": {"fake": 3, "real": 12}}
    assert [w.split(" (")[0] for w in summary["warnings"]] == ["all sources: JPEG quality differs between the classes"]


def test_a_source_of_one_class_is_a_warning_not_an_error(two_sources, tmp_path, capsys):
    only_fakes = make_image_folder(tmp_path / "only-fakes", per_class=4, seed=2)
    shutil.rmtree(os.path.join(only_fakes, "real"))
    output = tmp_path / "report"
    assert explore(capsys, "--data", two_sources[0], "--data", only_fakes, "--output", output)[0] == 0
    summary, report = read_report(output)
    assert summary["kept"]["only-fakes"] == {"fake": 4, "real": 0}
    assert summary["per_source"]["only-fakes"]["checks"] == {}
    assert [w.split(":")[0] for w in summary["warnings"]] == ["only-fakes holds only fake images"]
    assert "| only-fakes | 4 | 0 |" in report and "one class only" in report


def test_duplicates_are_counted_and_shown(two_sources, tmp_path, capsys):
    alpha, beta = two_sources
    # An exact copy across the sources, and a re-compressed (near-duplicate) copy within alpha, other class.
    shutil.copy(os.path.join(alpha, "real", "real_000.jpg"), os.path.join(beta, "real", "copy_of_alpha.jpg"))
    Image.open(os.path.join(alpha, "real", "real_001.jpg")).save(os.path.join(alpha, "fake", "resaved.jpg"), quality=70)
    output = tmp_path / "report"
    assert explore(capsys, "--data", alpha, "--data", beta, "--output", output)[0] == 0
    summary, report = read_report(output)
    duplicates = summary["duplicates"]
    assert (duplicates["exact_groups"], duplicates["exact_files"]) == (1, 2)
    assert (duplicates["near_groups"], duplicates["near_files"], duplicates["near_groups_across_classes"]) == (1, 2, 1)
    assert summary["dropped_by_reason"] == {"exact duplicate": 1}
    assert summary["images_kept"] == summary["images_loaded"] - 1 == 41
    assert {pair["kind"] for pair in duplicates["shown"]} == {"exact copy", "near duplicate"}
    assert ["alpha/real/real_001.jpg", "alpha/fake/resaved.jpg"] in [sorted(p["files"], reverse=True)
                                                                   for p in duplicates["shown"]]
    assert os.path.exists(output / "duplicates.png") and "(duplicates.png)" in report


def test_rerun_removes_figures_of_the_earlier_run(two_sources, tmp_path, capsys):
    output = tmp_path / "report"
    output.mkdir()
    (output / "duplicates.png").write_bytes(b"stale")
    (output / "notes.png").write_bytes(b"not ours")
    assert explore(capsys, "--data", two_sources[0], "--output", output)[0] == 0
    assert not (output / "duplicates.png").exists()
    assert (output / "notes.png").read_bytes() == b"not ours"


@pytest.mark.parametrize("quality", range(1, 101))
def test_jpeg_quality_is_recovered_exactly(quality):
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (120, 80, 40)).save(buffer, format="JPEG", quality=quality)
    assert jpeg_quality(Image.open(buffer)) == (quality, True)


def test_jpeg_quality_of_a_non_ijg_table_is_the_nearest():
    buffer = io.BytesIO()
    table = [3] * 64  # flat: no IJG quality uses it
    Image.new("RGB", (16, 16)).save(buffer, format="JPEG", qtables=[table, table])
    quality, exact = jpeg_quality(Image.open(buffer))
    assert not exact and 90 <= quality <= 99


@pytest.fixture
def bad_inputs(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    one_class = make_image_folder(tmp_path / "one-class", per_class=3)
    shutil.rmtree(os.path.join(one_class, "fake"))
    return {"missing": tmp_path / "missing", "empty": empty, "one class": one_class}


@pytest.mark.parametrize("case, message", [
    ("missing", "train.explore: error: {data} does not exist: pass an image folder (real/ and fake/ inside) or a Hub "
                "dataset id."),
    ("empty", "train.explore: error: {data} holds no image files: put .jpg/.png files in real/ and fake/ folders."),
    ("one class", "train.explore: error: The data holds only real images (3): add fake images (a fake/ folder "
                  "beside real/, or another --data), so the classes can be compared."),
])
def test_bad_input_is_one_line_and_exit_2(bad_inputs, tmp_path, capsys, case, message):
    data = bad_inputs[case]
    code, _, err = explore(capsys, "--data", data, "--output", tmp_path / "report")
    assert code == 2
    assert err == message.format(data=data) + "\n"
    assert not (tmp_path / "report").exists()


def test_missing_flags_exit_2(capsys, tmp_path):
    code, _, err = explore(capsys, "--output", tmp_path / "report")
    assert (code, err.splitlines()[-1]) == (2, "train.explore: error: No data given: pass --data with an image folder "
                                               "(real/ and fake/ inside) or a Hub dataset id, or --pool with a pool "
                                               "built by python -m train.sources.")
    code, _, err = explore(capsys, "--data", tmp_path)
    assert (code, err.splitlines()[-1]) == (2, "train.explore: error: Pass --output: the folder report.md, "
                                               "summary.json and the figures go to.")


def test_module_runs_as_a_command(tmp_path):
    """The entry point users type, in a fresh process."""
    result = subprocess.run([sys.executable, "-m", "train.explore", "--data", str(tmp_path / "missing"),
                             "--output", str(tmp_path / "report")], capture_output=True, text=True,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].endswith("does not exist: pass an image folder (real/ and fake/ "
                                                           "inside) or a Hub dataset id.")
