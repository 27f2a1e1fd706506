"""The main job behind ``make demo``: the whole loop on the embedded synthetic panda set.

generate -> corrupt -> validate -> look (grid) -> metrics -> find label errors -> quick experiment
(select, train, evaluate every arm against random) -> summary -> HTML report. Every step logs what it did
(the ``qualmet`` logger: ``qualmet demo`` shows it).
"""
from __future__ import annotations

import time
from pathlib import Path

from .log import logger

def _spec_path() -> Path:
    """experiments/pandas_filtering.toml: in this checkout, else as installed (qualmet.experiment_specs)."""
    here = Path(__file__).resolve().parents[1] / "experiments" / "pandas_filtering.toml"
    if here.is_file():
        return here
    from importlib import resources

    return Path(str(resources.files("qualmet.experiment_specs").joinpath("pandas_filtering.toml")))


SPEC = _spec_path()


def _step(title: str) -> float:
    logger.info(f"\n== {title}")
    return time.perf_counter()


def demo(out: str | Path, quick: bool = True, progress: bool = False) -> Path:
    """Run the demo into ``out`` (the quick experiment unless ``quick=False``) and return that folder;
    ``progress`` draws bars on a terminal."""
    from .label_errors import write_label_error_report
    from .experiment import compute_metrics, load_spec, prepare_data, run_experiment
    from .formats import load_coco, load_predictions
    from .review import build_review
    from .review_files import write_review
    from .manifest import load_manifest
    from .show import show_grid
    from .validate import validate

    out = Path(out)
    t0 = time.perf_counter()
    exp = out / "experiment"
    spec = load_spec(SPEC, quick=quick)

    t = _step("1. data: synthetic pandas, 30% label noise injected into the training split")
    noisy_json, test_json, manifest = prepare_data(spec, exp)
    noisy, test = load_coco(noisy_json), load_coco(test_json)
    man = load_manifest(manifest)
    logger.info(f"train (noisy): {len(noisy.images)} frames, {len(noisy.annotations)} boxes; test (clean): "
                f"{len(test.images)} frames, {len(test.annotations)} boxes; {len(man)} injected errors "
                f"{man['type'].value_counts().to_dict()} ({time.perf_counter() - t:.1f} s)")

    t = _step("2. validate the noisy training labels and their images")
    problems = validate(noisy)
    errors = [p for p in problems if p.severity == "error"]
    logger.info(f"{len(errors)} error(s), {len(problems) - len(errors)} warning(s) ({time.perf_counter() - t:.1f} s)")

    t = _step("3. look at the data: 20 frames with their boxes (injected errors in red)")
    grid = show_grid(noisy, out / "grid.png", n=20, seed=0, manifest=man)
    logger.info(f"wrote {grid} ({time.perf_counter() - t:.1f} s)")

    t = _step("4. quality metrics over every training frame, and how well each finds the injected errors")
    run = compute_metrics(spec, exp, noisy_json, workers=None, progress=progress)
    write_label_error_report(run, manifest, exp / "label_errors")
    logger.info((exp / "label_errors" / "label_errors.md").read_text())

    t = _step("5. the review queue: likely label issues, worst first, without using the noise manifest")
    oof = exp / "oof" / "preds_oof.json"
    review = build_review(noisy, run, load_predictions(oof, noisy) if oof.is_file() else None)
    write_review(review, noisy, out / "review")
    logger.info(f"{len(review.issues)} issues: {review.issues['kind'].value_counts().to_dict()}; "
                f"wrote {out / 'review'} ({time.perf_counter() - t:.1f} s)")

    t = _step(f"6. experiment{' (quick)' if quick else ''}: every arm trains the same detector on the same budget")
    run_experiment(SPEC, out=exp, quick=quick, progress=progress)

    t = _step("7. the browsable report: metric distributions, galleries, explorer, review queue, model, verdict")
    import tempfile

    from .commands.report import predict_for_report
    from .report import build_report

    model = exp / "arms" / "random" / f"seed{spec.seeds[0]}" / "model"
    with tempfile.TemporaryDirectory() as tmp:
        preds = predict_for_report(model, test_json, tmp) if (model / "model.pt").is_file() else None
        index = build_report(out / "report", experiment=exp, model=model if model.is_dir() else None,
                             predictions=preds, review=out / "review",
                             title="qualmet demo: synthetic pandas, 30% label noise", progress=progress)
    logger.info(f"wrote {index} ({time.perf_counter() - t:.1f} s); open it in a browser")
    logger.info(f"\ndemo finished in {(time.perf_counter() - t0) / 60:.1f} min; everything is under {out.resolve()}")
    logger.info(f"  look at: {grid}, {exp / 'summary.md'}, {exp / 'summary.png'}, {exp / 'label_errors' / 'label_errors.png'},")
    logger.info(f"           a trained model with loss curves: {model}")
    logger.info(f"  the report: {index}")
    return out
