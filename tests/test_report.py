"""The HTML report without a browser: which sections appear for which inputs, galleries worst-first by
each metric's 'worse', one explorer row per object with the run's values, every picture present
under --out, no web address anywhere, a small size. Inputs are a real synthetic set, real noise and a
real metrics run; the model and experiment folders are made without training (evaluate and
write_summary are real, the detector is not run here: see test_report_browser.py)."""
from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from qualmet.cli import main
from qualmet.errors import QualmetError
from qualmet.evaluate import evaluate
from qualmet.formats import load_coco
from qualmet.label_errors import write_label_error_report
from qualmet.metric_run import MetricRun
from qualmet.manifest import load_manifest
from qualmet.noise import corrupt_file
from qualmet.report import build_report
from qualmet.report.output import Output
from qualmet.report.thumbs import FRAME_PX, OBJECT_PX
from qualmet.runner import run_metrics
from qualmet.summary import write_summary
from qualmet.synth import generate

SECTIONS = ["overview", "metrics", "explorer", "model", "experiment"]


# -- fixtures -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    """30 synthetic frames at 128 px, 30% injected noise, every built-in metric computed."""
    root = tmp_path_factory.mktemp("report_data")
    generate(root / "syn", n_train=30, n_test=6, seed=0, size=128, workers=1)
    noisy, manifest, _ = corrupt_file(root / "syn" / "train.json", root / "syn" / "noisy.json", rate=0.3, seed=0)
    run = run_metrics(noisy, out=root / "run", workers=1, progress=False)
    return {"root": root, "noisy": noisy, "manifest": manifest, "run": root / "run", "objects": run.objects,
            "frames": run.frames, "info": run.info}


@pytest.fixture(scope="module")
def full(data) -> Path:
    out = data["root"] / "report_full"
    build_report(out, run=data["run"], manifest=data["manifest"], progress=False)
    return out


@pytest.fixture(scope="module")
def model_dir(data) -> dict:
    """A model folder as `qualmet train` leaves it (config, log, loss plot) with a real evaluation of
    jittered test labels as predictions, and those predictions as a COCO results file."""
    root = data["root"] / "model_case"
    model = root / "model"
    model.mkdir(parents=True)
    cfg = {"recipe": {"name": "ssdlite256", "iters": 20, "input_size": 128, "batch_size": 8}, "seed": 0,
           "categories": [{"id": 1, "name": "panda"}], "n_train_images": 30, "val_image_ids": [1, 2]}
    (model / "config.json").write_text(json.dumps(cfg))
    pd.DataFrame({"iter": [10, 20], "lr": [1e-3, 5e-4], "train_loss": [6.0, 4.5], "val_loss": [6.2, 5.1],
                  "val_AP": [0.01, 0.05], "val_AP50": [0.05, 0.2], "elapsed_s": [3.0, 6.0]}).to_csv(model / "train_log.csv", index=False)
    cv2.imwrite(str(model / "loss_curves.png"), np.full((40, 60, 3), 200, np.uint8))
    test = load_coco(data["root"] / "syn" / "test.json")
    rng = np.random.default_rng(0)
    a = test.annotations
    preds = [{"image_id": int(r.image_id), "category_id": int(r.category_id),
              "bbox": [float(r.x + rng.normal(0, 2)), float(r.y + rng.normal(0, 2)), float(r.w), float(r.h)],
              "score": float(rng.uniform(0.3, 1.0))} for r in a.itertuples()]
    (root / "preds.json").write_text(json.dumps(preds))
    evaluate(test, preds, out=root / "eval")
    return {"model": model, "eval": root / "eval", "preds": root / "preds.json",
            "test": data["root"] / "syn" / "test.json", "metrics": json.loads((root / "eval" / "metrics.json").read_text())}


@pytest.fixture(scope="module")
def exp_dir(data) -> Path:
    """An experiment folder as `qualmet experiment` writes it: results over two seeds summarised by the
    real write_summary, the label-error table from the real run and manifest, config and spec."""
    exp = data["root"] / "exp"
    exp.mkdir()
    rows = []
    for seed in (0, 1):
        for arm, ap, ar in (("random", 0.30, 0.40), ("filter:black_white_ratio", 0.33, 0.43), ("oracle_relabel", 0.36, 0.41)):
            rows.append({"arm": arm, "seed": seed, **{k: ap + 0.01 * seed for k in ("AP", "AP50", "AP75")},
                         **{k: ar + 0.02 * seed for k in ("AR1", "AR10", "AR100")}, "n_frames": 8, "n_boxes": 17})
    write_summary(pd.DataFrame(rows), exp, "fake")
    write_label_error_report(MetricRun(data["objects"], data["frames"], data["info"]), data["manifest"],
                             exp / "label_errors")
    (exp / "config.json").write_text(json.dumps({"spec": {"name": "fake", "budget": 0.25, "seeds": [0, 1],
                                                          "arms": [{"name": "random"}]}, "quick": False,
                                                 "qualmet_version": "test"}))
    (exp / "spec.toml").write_text('name = "fake"\nbudget = 0.25  # <the spec & its comments>\n')
    return exp


# -- helpers ------------------------------------------------------------------------------------

class _Page(HTMLParser):
    """Collects every img src / data-full and the gallery tiles: metric -> galleries -> [(id, value)]."""

    def __init__(self):
        super().__init__()
        self.srcs: list[str] = []
        self.galleries: dict[str, list[list[tuple[int, float]]]] = {}
        self._current: list | None = None
        self._metric: str | None = None
        self.injected_tiles: dict[str, set[int]] = {}  # metric -> ids of tiles marked as injected errors

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img" and a.get("src"):
            self.srcs.append(a["src"])
        if a.get("data-full"):
            self.srcs.append(a["data-full"])
        if tag == "div" and "data-metric" in a:
            self._metric = a["data-metric"]
            self._current = []
            self.galleries.setdefault(a["data-metric"], []).append(self._current)
        if tag == "div" and "thumb" in (a.get("class") or "").split() and self._current is not None:
            v = json.loads(a["data-value"])
            self._current.append((int(a["data-id"]), float("nan") if v is None else v))
            self.injected_tiles.setdefault(self._metric, set())
            if "injected" in a["class"].split():
                self.injected_tiles[self._metric].add(int(a["data-id"]))


def parse(out: Path) -> _Page:
    p = _Page()
    p.feed((out / "index.html").read_text(encoding="utf-8"))
    return p


def blob(out: Path, name: str) -> dict:
    html = (out / "index.html").read_text(encoding="utf-8")
    m = re.search(rf'<script type="application/json" id="{name}">(.*?)</script>', html, re.S)
    assert m, f"no {name} blob"
    return json.loads(m.group(1))


def sections(out: Path) -> list[str]:
    return re.findall(r'<section class="report-section" id="(\w+)"', (out / "index.html").read_text(encoding="utf-8"))


def expected_order(values: pd.Series, ids: pd.Series, worse: str) -> list[int]:
    """Ids with a value, most suspicious first, ties by id (what the gallery must show)."""
    df = pd.DataFrame({"v": values.to_numpy(float), "id": ids.to_numpy()}).dropna()
    df = df.sort_values(["v", "id"], ascending=[worse == "low", True], kind="mergesort")
    return df["id"].astype(int).tolist()


# -- tests --------------------------------------------------------------------------------------

def test_run_report_has_data_sections_only(full):
    assert sections(full) == ["overview", "metrics", "explorer"]
    html = (full / "index.html").read_text(encoding="utf-8")
    assert 'href="#model"' not in html and 'href="#experiment"' not in html
    assert "<h1>" in html and 'id="explorer-objects"' in html and 'id="explorer-frames"' in html


def test_overview_counts(full, data):
    html = (full / "index.html").read_text(encoding="utf-8")
    n_frames, n_obj = len(data["frames"]), len(data["objects"])
    tiles = dict(re.findall(r'<div class="label">([^<]+)</div><div class="value">([^<]+)</div>', html))
    assert tiles["Frames"] == f"{n_frames:,}" and tiles["Objects (boxes)"] == f"{n_obj:,}"
    assert tiles["Runner errors"] == str(len(data["info"]["errors"]))
    assert tiles["Injected errors"] == str(len(load_manifest(data["manifest"])))
    per_frame = data["objects"].groupby("image_id").size().reindex(data["frames"]["image_id"]).fillna(0)
    assert tiles["Boxes per frame"] == f"{per_frame.mean():.3g}"


def test_galleries_are_worst_first_by_each_metrics_worse(full, data):
    page = parse(full)
    info = {m["name"]: m for m in data["info"]["metrics"]}
    assert set(page.galleries) == set(info)
    man = load_manifest(data["manifest"])
    changed = set(man.loc[man.type != "missing", "annotation_id"].astype(int))
    for name, m in info.items():
        table = data["objects"] if m["level"] == "object" else data["frames"]
        ids = table["annotation_id"] if m["level"] == "object" else table["image_id"]
        worst, best = page.galleries[name]
        vals = table[name].dropna()
        extreme = vals.max() if m["worse"] == "high" else vals.min()
        assert worst[0][1] == pytest.approx(extreme, rel=1e-12, abs=1e-15), name
        assert [i for i, _ in worst] == expected_order(table[name], ids, m["worse"])[:24], name
        assert len(worst) == min(24, len(vals)) and len(best) == min(12, len(vals))
        other = "low" if m["worse"] == "high" else "high"
        assert [i for i, _ in best] == expected_order(table[name], ids, other)[:12], name
        w = np.array([v for _, v in worst])
        assert (np.diff(w) <= 0).all() if m["worse"] == "high" else (np.diff(w) >= 0).all()
        shown = {i for i, _ in worst + best}
        if m["level"] == "object":  # tiles marked as injected errors: exactly the manifest's changed/added boxes
            assert page.injected_tiles[name] == shown & changed, name
        else:  # frames: those holding any injected error, deleted boxes included
            assert page.injected_tiles[name] == shown & set(man["image_id"].astype(int)), name


def test_explorer_has_one_row_per_object_with_the_runs_values(full, data):
    objs, frames = data["objects"], data["frames"]
    ob = blob(full, "data-objects")
    keys = [c["key"] for c in ob["columns"]]
    rows = pd.DataFrame(ob["rows"], columns=keys)
    assert len(rows) == len(objs) and rows["annotation_id"].is_unique
    assert set(rows["annotation_id"]) == set(objs["annotation_id"])
    merged = objs.merge(rows, on="annotation_id", suffixes=("", "_js"))
    object_metrics = [m["name"] for m in data["info"]["metrics"] if m["level"] == "object"]
    assert object_metrics and all(k in keys for k in object_metrics)
    for m in object_metrics:
        js = merged[m + "_js"].astype(float).to_numpy()
        assert np.array_equal(np.isnan(js), merged[m].isna().to_numpy()), m
        assert np.allclose(js[~np.isnan(js)], merged[m].dropna().to_numpy(), rtol=0, atol=0), m
    # injected error types straight from the manifest (added boxes carry their new ids)
    man = load_manifest(data["manifest"])
    kinds = man[man.type != "missing"].set_index("annotation_id")["type"]
    exp = merged["annotation_id"].map(kinds)
    assert (merged["error"].fillna("clean") == exp.fillna("clean")).all()
    assert merged["error"].notna().sum() == (man.type != "missing").sum()
    # one thumbnail per object, all distinct; frames: one row per frame with injected counts
    assert rows["thumb"].notna().all() and rows["thumb"].is_unique
    fb = blob(full, "data-frames")
    frows = pd.DataFrame(fb["rows"], columns=[c["key"] for c in fb["columns"]])
    assert len(frows) == len(frames) and set(frows["image_id"]) == set(frames["image_id"])
    cnt = man["image_id"].value_counts()
    assert (frows["injected"] == frows["image_id"].map(cnt).fillna(0).astype(int)).all()


def test_every_picture_resolves_under_out_and_gallery_shares_explorer_thumbs(full, data):
    page = parse(full)
    ob = blob(full, "data-objects")
    keys = [c["key"] for c in ob["columns"]]
    thumbs = {r[keys.index("annotation_id")]: r[keys.index("thumb")] for r in ob["rows"]}
    srcs = page.srcs + list(thumbs.values()) + list(ob["frameThumbs"].values())
    assert len(srcs) > 2 * len(data["objects"])
    root = full.resolve()
    for s in set(srcs):
        assert not re.match(r"^[a-z]+:", s) and not s.startswith("/"), s
        p = (full / s).resolve()
        assert root in p.parents and p.is_file(), s
    # gallery tiles of object metrics use the explorer's thumbnail of the same object
    html = (full / "index.html").read_text(encoding="utf-8")
    for oid, src in re.findall(r'class="thumb[^"]*" data-id="(\d+)"[^>]*>\s*<img class="" src="(assets/thumbs/o\d+\.jpg)"', html):
        assert thumbs[int(oid)] == src
    files = list((full / "assets" / "thumbs").glob("*.jpg"))
    assert len(files) == len(data["objects"]) + len(data["frames"])  # one per object, one per frame, shared
    o = cv2.imread(str(full / thumbs[int(data["objects"]["annotation_id"].iloc[0])]))
    assert o.shape == (OBJECT_PX, OBJECT_PX, 3)
    f = cv2.imread(str(full / ob["frameThumbs"][str(int(data["frames"]["image_id"].iloc[0]))]))
    assert max(f.shape[:2]) == FRAME_PX


def test_no_web_address_anywhere_and_size_is_small(full):
    total = 0
    for p in full.rglob("*"):
        if p.is_file():
            b = p.read_bytes()
            total += len(b)
            assert b"http://" not in b and b"https://" not in b, p
    html = (full / "index.html").read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)=["']//""", html)  # no protocol-relative fetches either
    assert total < 3e6, f"{total / 1e6:.1f} MB for 30 frames"


def test_histograms_split_clean_and_injected_when_a_manifest_is_known(full, data, tmp_path):
    page = parse(full)
    hist = [s for s in page.srcs if "/hist_" in s]
    assert len(hist) == len(data["info"]["metrics"])
    # without a manifest: no injected column, no AUROC column, no manifest listed
    clean = tmp_path / "run_clean"
    run_metrics(data["root"] / "syn" / "train.json", metrics=["aspect_ratio", "brightness"], out=clean,
                workers=1, progress=False)
    out = tmp_path / "rep"
    build_report(out, run=clean, progress=False)
    ob = blob(out, "data-objects")
    assert "error" not in [c["key"] for c in ob["columns"]]
    html = (out / "index.html").read_text(encoding="utf-8")
    assert "AUROC" not in html and "Injected errors" not in html
    assert sections(out) == ["overview", "metrics", "explorer"]


def test_model_and_experiment_sections(data, model_dir, exp_dir, tmp_path):
    out = tmp_path / "rep"
    build_report(out, run=data["run"], manifest=data["manifest"], experiment=exp_dir, model=model_dir["model"],
                 eval_dir=model_dir["eval"], test=model_dir["test"], predictions=model_dir["preds"], progress=False)
    assert sections(out) == SECTIONS
    html = (out / "index.html").read_text(encoding="utf-8")
    model_html = html[html.index('id="model"'):html.index('id="experiment"')]
    stats = model_dir["metrics"]["stats"]
    assert f"{stats['AP']:.3g}" in model_html and f"{stats['AP50']:.3g}" in model_html
    for f in ("loss_curves.png", "pr_curve.png", "confusion_matrix.png"):
        assert f"assets/model/{f}" in model_html and (out / "assets" / "model" / f).is_file()
    test_imgs = re.findall(r'src="(assets/model/test_\d+\.jpg)"', model_html)
    assert len(test_imgs) == 6 and all((out / s).is_file() for s in test_imgs)
    exp_html = html[html.index('id="experiment"'):]
    summary = pd.read_csv(exp_dir / "summary.csv")
    for r in summary.itertuples():
        assert f"<b>{r.arm}</b>" in exp_html
        if r.arm != "random":
            assert f"{r.AP_rel:+.1f}%" in exp_html and f"{r.AR100_rel:+.1f}%" in exp_html
    assert "Declared contrasts" in exp_html and "filter:black_white_ratio − random" in exp_html
    le = pd.read_csv(exp_dir / "label_errors" / "label_errors.csv")
    cell = le[(le.metric == "black_white_ratio") & (le.type == "any")].auroc.iloc[0]
    assert f">{cell:.2f}</td>" in exp_html
    assert "&lt;the spec &amp; its comments&gt;" in exp_html  # the spec, escaped, in a <pre>
    assert (out / "assets" / "experiment" / "summary.png").is_file()


def test_only_what_is_given(model_dir, exp_dir, tmp_path):
    out = tmp_path / "exp_only"
    build_report(out, experiment=exp_dir, progress=False)
    assert sections(out) == ["experiment"]
    out = tmp_path / "model_only"
    build_report(out, model=model_dir["model"], progress=False)  # eval found beside it, no test set: no frames
    assert sections(out) == ["model"]
    html = (out / "index.html").read_text(encoding="utf-8")
    assert "COCO evaluation" in html and "Test frames" not in html
    with pytest.raises(QualmetError, match="nothing to report"):
        build_report(tmp_path / "none", progress=False)
    with pytest.raises(QualmetError, match="not a metrics run folder"):
        build_report(tmp_path / "bad", run=tmp_path, progress=False)


def test_output_stays_under_out(data, full, tmp_path):
    o = Output(tmp_path / "r")
    for bad in ("../escape.txt", "assets/../../escape.txt", str(tmp_path / "abs.txt")):
        with pytest.raises(QualmetError):
            o.write_text(bad, "x")
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "abs.txt").exists()
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "mine.txt").write_text("keep")
    with pytest.raises(QualmetError, match="not empty"):
        build_report(busy, run=data["run"], progress=False)
    assert sorted(p.name for p in busy.iterdir()) == ["mine.txt"]
    # an earlier report is rebuilt in place, its stale assets removed
    again = tmp_path / "again"
    build_report(again, run=data["run"], progress=False)
    (again / "assets" / "thumbs" / "stale.jpg").write_bytes(b"x")
    build_report(again, run=data["run"], progress=False)
    assert not (again / "assets" / "thumbs" / "stale.jpg").exists() and (again / "index.html").is_file()


def test_a_rebuild_that_fails_midway_leaves_the_earlier_report_whole(data, tmp_path, monkeypatch):
    """Old pictures go only after the new index.html is in place (they were deleted first, so an error
    or Ctrl-C while making thumbnails left an index pointing at nothing)."""
    out = tmp_path / "r"
    build_report(out, run=data["run"], progress=False)
    pics = re.findall(r'src="(assets/[^"]+)"', (out / "index.html").read_text(encoding="utf-8"))
    assert pics and all((out / p).is_file() for p in pics)
    import qualmet.report.thumbs as thumbs

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(thumbs, "make_thumbnails", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_report(out, run=data["run"], progress=False)
    assert all((out / p).is_file() for p in re.findall(r'src="(assets/[^"]+)"', (out / "index.html").read_text(encoding="utf-8")))


def test_damaged_inputs_are_one_line_errors_naming_the_file(data, exp_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(data["run"], run)
    (run / "objects.parquet").write_bytes((run / "objects.parquet").read_bytes()[:100])
    with pytest.raises(QualmetError, match=r"objects\.parquet: cannot read parquet"):
        build_report(tmp_path / "o1", run=run, progress=False)
    (run / "run.json").write_text("[1, 2]")
    with pytest.raises(QualmetError, match=r"run\.json: expected a JSON object, found list"):
        build_report(tmp_path / "o2", run=run, progress=False)
    exp = tmp_path / "exp"
    shutil.copytree(exp_dir, exp)
    le = exp / "label_errors" / "label_errors.csv"
    pd.read_csv(le).drop(columns="level").to_csv(le, index=False)
    with pytest.raises(QualmetError, match=r"label_errors\.csv: no column\(s\) level"):
        build_report(tmp_path / "o3", experiment=exp, progress=False)
    (exp / "spec.toml").write_bytes(b"name = 'caf\xe9'\n")
    with pytest.raises(QualmetError, match=r"spec\.toml: cannot read it as UTF-8"):
        build_report(tmp_path / "o4", experiment=exp, progress=False)
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 5))  # nothing written for a bad input


def test_moved_data_is_found_and_unreadable_images_do_not_lose_the_report(data, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(data["root"] / "syn", moved / "syn")
    shutil.copytree(data["run"], moved / "run")
    info = json.loads((moved / "run" / "run.json").read_text())
    info["dataset"]["path"] = "/nonexistent/place/syn/noisy.json"  # recorded where it no longer is
    (moved / "run" / "run.json").write_text(json.dumps(info))
    bad = sorted((moved / "syn" / "images").glob("train_*.jpg"))[0]
    bad.write_bytes(b"not a jpeg")
    out = tmp_path / "rep"
    build_report(out, run=moved / "run", progress=False)
    html = (out / "index.html").read_text(encoding="utf-8")
    assert str((moved / "syn" / "noisy.json").resolve()) in html  # found by the path's tail
    assert "could not be read for thumbnails" in html and bad.name in html
    ob = blob(out, "data-objects")
    keys = [c["key"] for c in ob["columns"]]
    rows = pd.DataFrame(ob["rows"], columns=keys)
    gone = rows["file_name"] == bad.name
    assert rows.loc[gone, "thumb"].isna().all() and rows.loc[~gone, "thumb"].notna().all()
    # the manifest beside the data set was picked up on its own
    assert "Injected errors" in html


def test_cli(data, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["report", "--run", str(data["run"]), "--out", str(out), "--no-progress"]) == 0
    assert f"wrote {out.resolve() / 'index.html'}" in capsys.readouterr().out
    assert main(["report", "--run", str(tmp_path / "missing"), "--out", str(tmp_path / "x")]) == 2
    assert "not a metrics run folder" in capsys.readouterr().err


def test_each_image_is_decoded_once_for_all_its_thumbnails(data, tmp_path, monkeypatch):
    import qualmet.imageio

    calls = []
    real = qualmet.imageio.read_image
    monkeypatch.setattr(qualmet.imageio, "read_image", lambda p: calls.append(Path(p).name) or real(p))
    build_report(tmp_path / "rep", run=data["run"], progress=False)
    assert sorted(calls) == sorted(data["frames"]["file_name"])  # one decode per frame, however many boxes
    assert len(list((tmp_path / "rep" / "assets" / "thumbs").glob("o*.jpg"))) == len(data["objects"])


def test_image_root_of_the_run_is_used_and_missing_images_are_a_warning(data, tmp_path, capsys):
    """A run made with --images DIR records that root, so the report finds the images without being
    told again; when they are gone, the command says so on stderr (not only inside the HTML)."""
    elsewhere = tmp_path / "labels" / "noisy.json"  # the JSON alone, its images in another folder
    elsewhere.parent.mkdir()
    shutil.copy(data["noisy"], elsewhere)
    images = tmp_path / "pix"
    shutil.copytree(data["root"] / "syn" / "images", images)
    assert main(["metrics", "run", str(elsewhere), "--images", str(images), "--metrics", "brightness,aspect_ratio",
                 "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    assert json.loads((tmp_path / "run" / "run.json").read_text())["dataset"]["image_root"] == str(images.resolve())
    capsys.readouterr()
    assert main(["report", "--run", str(tmp_path / "run"), "--out", str(tmp_path / "rep"), "--no-progress"]) == 0
    assert "warning" not in capsys.readouterr().err
    rows = blob(tmp_path / "rep", "data-objects")
    keys = [c["key"] for c in rows["columns"]]
    assert pd.DataFrame(rows["rows"], columns=keys)["thumb"].notna().all()
    shutil.rmtree(images)
    assert main(["report", "--run", str(tmp_path / "run"), "--out", str(tmp_path / "rep2"), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert f"warning: {len(data['frames'])} of {len(data['frames'])} images could not be read, no thumbnails" in err
    assert "pass --images DIR" in err
