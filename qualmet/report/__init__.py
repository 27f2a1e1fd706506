"""A self-contained HTML report of a metrics run, an experiment and a model: ``report/index.html``
plus ``report/assets/`` (JPEG thumbnails, PNG plots). Opens from disk; nothing is fetched.

    from qualmet.report import build_report
    build_report(run="runs/metrics", manifest="noisy.manifest.json", out="report")
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from ..errors import QualmetError
from .output import Output

__all__ = ["build_report"]


def build_report(out: str | os.PathLike, run: str | os.PathLike | None = None,
                 experiment: str | os.PathLike | None = None, model: str | os.PathLike | None = None,
                 manifest: str | os.PathLike | None = None, dataset: str | os.PathLike | None = None,
                 images: str | os.PathLike | None = None, eval_dir: str | os.PathLike | None = None,
                 test: str | os.PathLike | None = None, predictions: str | os.PathLike | None = None,
                 title: str | None = None, progress: bool = False, warnings: list[str] | None = None,
                 review: str | os.PathLike | None = None) -> Path:
    """Write the report into ``out`` and return the path of its index.html.

    ``run`` is a ``qualmet metrics run`` folder (default with ``experiment``: its ``metrics/``);
    ``manifest`` a noise manifest (default: the experiment's, or ``NOISY.manifest.json`` beside the
    run's data set); ``model`` a ``qualmet train`` folder, evaluated in ``eval_dir`` (default: found
    beside it) with prediction examples on ``test`` (default: the experiment's test split) from
    ``predictions`` (without them it shows the labels alone); ``review`` a ``qualmet review`` folder,
    whose crops come from the run's data set. Sections whose inputs are absent are left out.
    What the report had to leave out (no data set found, unreadable images) is also appended to
    ``warnings`` when a list is given.
    """
    from . import html, inputs
    from .experiment_section import experiment_section
    from .model_section import find_test_set, model_section
    t0 = time.perf_counter()
    exp_dir = Path(experiment) if experiment is not None else None
    if run is None and exp_dir is not None and (exp_dir / "metrics" / "run.json").is_file():
        run = exp_dir / "metrics"
    if manifest is None and exp_dir is not None and (exp_dir / "data" / "manifest.json").is_file() and run is not None \
            and Path(run).resolve() == (exp_dir / "metrics").resolve():
        manifest = exp_dir / "data" / "manifest.json"
    if run is None and exp_dir is None and model is None and review is None:
        raise QualmetError("nothing to report: give --run, --experiment, --model and/or --review")
    # load everything before writing anything: a bad input fails before the output folder is touched
    run_data = inputs.load_run(run, dataset=dataset, images=images, manifest=manifest) if run is not None else None
    exp_data = inputs.load_experiment(exp_dir) if exp_dir is not None else None
    model_data = inputs.load_model(model, eval_dir, test, predictions) if model is not None else None
    review_data = inputs.load_review(review) if review is not None else None
    test_ds = find_test_set(model_data, exp_dir) if model_data is not None else None
    o = Output(out)
    o.mark()

    secs: list[tuple[str, str, str]] = []
    n = 0
    subtitle = []
    if run_data is not None:
        data_secs, line = _data_sections(run_data, model_data, exp_data, test_ds, o, warnings, progress)
        secs += data_secs
        n += len(data_secs)
        subtitle.append(line)
    if review_data is not None:
        from .review_section import review_section

        n += 1
        secs.append(("review", "Review", review_section(review_data, run_data.dataset if run_data else None, o, n)))
    if model_data is not None:
        n += 1
        secs.append(("model", "Model", model_section(model_data, o, test_ds, number=n)))
    if exp_data is not None:
        n += 1
        secs.append(("experiment", "Experiment", experiment_section(exp_data, o, number=n)))
        subtitle.append(f"experiment {(exp_data.config.get('spec') or {}).get('name', exp_data.dir.name)}")
    name = title or ("qualmet report: " + (run_data.dataset_path.stem if run_data is not None and run_data.dataset_path
                                           else (exp_data.dir.name if exp_data is not None else
                                                 Path(model if model is not None else review).name)))
    subtitle.append(f"built in {time.perf_counter() - t0:.1f} s")
    index = o.write_text("index.html", html.page(name, html.esc(" · ".join(subtitle)), secs))
    o.prune_assets()
    return o.path(index)


def _data_sections(run_data, model_data, exp_data, test_ds, o: Output, warnings: list[str] | None,
                   progress: bool) -> tuple[list[tuple[str, str, str]], str]:
    """The overview, metric cards and explorer of a metrics run, and the subtitle's line about it."""
    from .sections import explorer, metric_cards, overview
    from .thumbs import make_thumbnails

    thumbs = None
    if run_data.dataset is not None:
        thumbs = make_thumbnails(run_data.dataset.image_root, run_data.objects, run_data.frames, o,
                                 run_data.object_error_types() if run_data.manifest is not None else None,
                                 run_data.manifest, progress=progress)
    if warnings is not None:
        warnings.extend(run_data.notes)
        if thumbs is not None and thumbs.failed:
            f = thumbs.failed[0]
            warnings.append(f"{len(thumbs.failed)} of {len(run_data.frames)} images could not be read, no thumbnails "
                            f"for them (root {run_data.dataset.image_root}); first: {f['reason']}; "
                            "pass --images DIR if they are elsewhere")
    shown = {"metrics run": str(run_data.dir.resolve()),
             "data set": str(run_data.dataset_path.resolve()) if run_data.dataset_path else "not found",
             "image root": str(run_data.dataset.image_root) if run_data.dataset is not None else "–",
             "noise manifest": str(run_data.manifest_path.resolve()) if run_data.manifest_path else "none",
             "qualmet (run)": str(run_data.info.get("qualmet_version", "?"))}
    if model_data is not None:
        shown["model"] = str(model_data.dir.resolve())
        if test_ds is not None:
            shown["test set"] = str(Path(test_ds.source).resolve())
    if exp_data is not None:
        shown["experiment"] = str(exp_data.dir.resolve())
    secs = [("overview", "Overview", overview(run_data, thumbs, shown)),
            ("metrics", "Metrics", metric_cards(run_data, o, thumbs, number=2)),
            ("explorer", "Explorer", explorer(run_data, thumbs, number=3))]
    ds = run_data.info.get("dataset") or {}
    return secs, (f"{ds.get('images', len(run_data.frames)):,} frames · {len(run_data.objects):,} boxes · "
                  f"{len(run_data.metrics)} metrics")
