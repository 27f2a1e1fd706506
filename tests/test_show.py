"""show_grid: a readable PNG of the expected size, noise colours, unreadable frames survive."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

import qualmet
from qualmet import manifest, noise
from qualmet.cli import main
from qualmet.dataset import Dataset
from qualmet.formats import save_coco
from qualmet.show import CELL_H, CELL_W, LEGEND_H, grid_size, show_grid


@pytest.fixture(scope="module")
def raccoon(raccoon_dir):
    return qualmet.load_dataset(raccoon_dir / "annotations")


def _read(p) -> np.ndarray:
    img = cv2.imread(str(p), cv2.IMREAD_COLOR)
    assert img is not None
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _count(img: np.ndarray, rgb) -> int:
    return int((np.abs(img.astype(int) - np.array(rgb)).sum(axis=2) < 30).sum())


def test_grid_size_and_content(tmp_path, raccoon):
    out = show_grid(raccoon, tmp_path / "g.png", n=6, seed=0, cols=3)
    img = _read(out)
    assert img.shape == (2 * CELL_H + LEGEND_H, 3 * CELL_W, 3) and grid_size(6, 3) == (3 * CELL_W, 2 * CELL_H + LEGEND_H)
    assert img[:CELL_H, :CELL_W].std() > 20  # a photo, not a blank cell
    assert _count(img, (40, 200, 40)) > 200  # green boxes drawn
    assert _count(img, (230, 30, 30)) < 50  # no noise colours without a manifest
    assert not list(tmp_path.glob(".*.tmp*"))  # atomic write left no temp file


def test_seed_picks_frames(tmp_path, raccoon):
    a = _read(show_grid(raccoon, tmp_path / "a.png", n=4, seed=1))
    b = _read(show_grid(raccoon, tmp_path / "b.png", n=4, seed=1))
    c = _read(show_grid(raccoon, tmp_path / "c.png", n=4, seed=2))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_manifest_colours(tmp_path, raccoon):
    noisy, m = noise.corrupt(raccoon, rate=1.0, seed=0, types=["missing", "shift"])
    out = show_grid(noisy, tmp_path / "n.png", n=10, seed=0, manifest=m)
    img = _read(out)
    assert _count(img[:-LEGEND_H], (230, 30, 30)) > 200  # shifted boxes in red
    assert _count(img[:-LEGEND_H], (250, 220, 0)) > 100  # deleted boxes in yellow


def test_unreadable_frame_does_not_lose_the_sheet(tmp_path, raccoon_dir):
    root = tmp_path / "imgs"
    root.mkdir()
    src = sorted((raccoon_dir / "images").glob("*.jpg"))[0]
    (root / "good.jpg").write_bytes(src.read_bytes())
    (root / "bad.jpg").write_bytes(b"not an image")
    ds = Dataset.from_records([{"id": 1, "file_name": "good.jpg", "width": 10, "height": 10},
                               {"id": 2, "file_name": "bad.jpg", "width": 10, "height": 10},
                               {"id": 3, "file_name": "gone.jpg", "width": 10, "height": 10}],
                              [], [{"id": 1, "name": "x"}], image_root=root)
    unreadable: list = []
    img = _read(show_grid(ds, tmp_path / "u.png", n=3, cols=3, unreadable=unreadable))
    assert img.shape == (CELL_H + LEGEND_H, 3 * CELL_W, 3)
    assert img[:CELL_H, :CELL_W].std() > 20
    assert sorted(f for f, _ in unreadable) == ["bad.jpg", "gone.jpg"]
    assert any("image file not found" in why for f, why in unreadable if f == "gone.jpg")


def test_cli_show_without_the_images_says_so(tmp_path, raccoon, capsys):
    src = tmp_path / "elsewhere" / "clean.json"  # the JSON alone: no images beside it, no .images sidecar
    save_coco(raccoon, src)
    src.with_suffix(".images").unlink()
    assert main(["show", str(src), "--n", "4", "--out", str(tmp_path / "g.png")]) == 1
    err = capsys.readouterr().err
    assert "warning: 4 of 4 frames could not be read (grey cells)" in err and "pass --images DIR" in err
    assert (tmp_path / "g.png").exists()  # the sheet is still written


def test_cli_show(tmp_path, raccoon, raccoon_dir):
    src = tmp_path / "clean.json"
    save_coco(raccoon, src)
    assert main(["corrupt", str(src), "--out", str(tmp_path / "noisy.json"), "--seed", "1"]) == 0
    out = tmp_path / "grid.png"
    assert main(["show", str(tmp_path / "noisy.json"), "--images", str(raccoon_dir / "images"), "--n", "7",
                 "--out", str(out), "--manifest", str(tmp_path / "noisy.manifest.json"), "--seed", "3"]) == 0
    assert _read(out).shape == (2 * CELL_H + LEGEND_H, 5 * CELL_W, 3)


def test_a_manifest_of_other_labels_is_refused(tmp_path, raccoon):
    """It painted the clean set's boxes red and drew deletions that were not there, exit 0."""
    noisy, m = noise.corrupt(raccoon, rate=0.5, seed=0, types=["missing", "shift"])
    path = tmp_path / "m.json"
    manifest.save_manifest(m, path)
    with pytest.raises(qualmet.QualmetError, match=r"m\.json: does not describe .* annotation \d+"):
        show_grid(raccoon, tmp_path / "clean.png", n=4, manifest=manifest.load_manifest(path))
    assert not (tmp_path / "clean.png").exists()
    bad = tmp_path / "bad.csv"
    bad.write_text("annotation_id,image_id,type,orig_x\n5,3,missing,1.0\n")
    with pytest.raises(qualmet.QualmetError, match=r"bad\.csv: record \[0\] \(annotation 5, missing\): no orig_y"):
        manifest.load_manifest(bad)


def test_the_legend_fits_a_one_column_sheet_and_the_suffix_picks_the_format(tmp_path, raccoon):
    noisy, m = noise.corrupt(raccoon, rate=1.0, seed=0, types=["missing", "shift"])
    one = _read(show_grid(noisy, tmp_path / "one.png", n=1, cols=1, manifest=m))
    assert one.shape[1] == 2 * CELL_W == grid_size(1, 1, noise=True)[0]
    assert _count(one[-LEGEND_H:], (250, 220, 0)) > 20  # "yellow dashed: deleted" is drawn, not cut off
    jpg = show_grid(raccoon, tmp_path / "g.jpg", n=2)
    assert jpg.read_bytes()[:3] == b"\xff\xd8\xff" and _read(jpg).shape == (CELL_H + LEGEND_H, 2 * CELL_W, 3)
    with pytest.raises(qualmet.QualmetError, match=r"g\.gif: the sheet is written as PNG, JPEG or WebP"):
        show_grid(raccoon, tmp_path / "g.gif", n=2)
