"""``qualmet export fiftyone``: a metrics run (and a review queue) as COCO labels FiftyOne imports."""
from __future__ import annotations

import argparse

from ..log import logger
from ._common import add_dataset_args

FIFTYONE_LINES = """import fiftyone as fo
ds = fo.Dataset.from_dir(dataset_type=fo.types.COCODetectionDataset, data_path="{images}",
                         labels_path="{labels}", extra_attrs=True, include_id=True)"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="hand metrics and the review queue to other tools (FiftyOne)",
                       description="Write the data set as COCO JSON whose annotations carry every object metric of a "
                                   "metrics run (qualmet_<metric>) and whose images carry every frame metric; with "
                                   "--review, also the queue's qualmet_score, qualmet_issue and qualmet_reasons. "
                                   "FiftyOne's COCO importer (extra_attrs=True) turns them into Detection and sample "
                                   "fields; the two lines to type are printed. See docs/ecosystem.md.")
    p.add_argument("target", choices=("fiftyone",), help="the tool to export for")
    add_dataset_args(p)
    p.add_argument("--run", required=True, help="metrics run folder of this data set (from `qualmet metrics run`)")
    p.add_argument("--review", default=None, help="a `qualmet review` folder of the same labels, to add its scores")
    p.add_argument("--out", required=True, help="the COCO JSON to write (FiftyOne's labels_path)")
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from ..fiftyone_bridge import write_metrics_coco
    from ..formats import load_coco

    ds = load_coco(args.dataset, images=args.images)
    labels = write_metrics_coco(args.run, ds, args.out, review=args.review)
    logger.info(f"wrote {labels}; in an environment with FiftyOne:")
    logger.info(FIFTYONE_LINES.format(images=ds.image_root, labels=labels))
    return 0
