"""Data set commands: ``validate``, ``convert``, ``info``."""
from __future__ import annotations

import argparse
import json
import sys

from ..formats import FORMATS
from ..log import logger
from ._common import IMAGES_HELP

PATH_HELP = ("a COCO .json, a CSV .csv, an Ultralytics data.yaml, or a folder of VOC .xml / YOLO .txt files (or an "
             "Ultralytics images/ + labels/ root)")
FORMAT_HELP = "the input's format (default auto: from the file's suffix or the folder's contents)"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="report every problem in a data set (exit 1 on errors)",
                       description="Check a COCO/VOC/YOLO/CSV data set and its images; every problem names its file and item.")
    p.add_argument("path", help=PATH_HELP)
    p.add_argument("--format", default="auto", choices=("auto",) + FORMATS, help=FORMAT_HELP)
    p.add_argument("--images", default=None, help=IMAGES_HELP)
    p.add_argument("--no-images", action="store_true", help="check labels only, do not open image files")
    p.add_argument("--json", action="store_true", help="print problems as JSON lines")
    p.set_defaults(func=cmd_validate)

    c = sub.add_parser("convert", help="convert a data set between formats",
                       description="Convert VOC/YOLO/CSV/COCO to COCO JSON or YOLO txt.")
    c.add_argument("path", help=PATH_HELP)
    c.add_argument("--from", dest="src_format", default="auto", choices=("auto",) + FORMATS, help=FORMAT_HELP)
    c.add_argument("--to", dest="dst_format", default="coco", choices=("coco", "yolo", "ultralytics"),
                   help="coco: a COCO JSON; yolo: labels/ + images/ + classes.txt; ultralytics: images/<split>/, "
                        "labels/<split>/ and data.yaml (each image to its split, else train)")
    c.add_argument("--images", default=None, help="image root of the input; " + IMAGES_HELP)
    c.add_argument("--names", default=None, metavar="FILE",
                   help="YOLO class names: a classes.txt / obj.names (one per line) or an Ultralytics data.yaml")
    c.add_argument("--split", default=None,
                   help="of an Ultralytics data set (data.yaml or images/<split> layout), convert this split only "
                        "(default: all, each image's split kept in its 'split' field)")
    c.add_argument("--out", required=True, help="output .json (coco) or folder (yolo, ultralytics)")
    c.set_defaults(func=cmd_convert)

    i = sub.add_parser("info", help="summarise a data set (frames, boxes, classes)")
    i.add_argument("path", help=PATH_HELP)
    i.add_argument("--format", default="auto", choices=("auto",) + FORMATS, help=FORMAT_HELP)
    i.add_argument("--images", default=None, help=IMAGES_HELP)
    i.set_defaults(func=cmd_info)


def cmd_validate(args: argparse.Namespace) -> int:
    from ..formats import load_dataset
    from ..validate import validate

    ds = load_dataset(args.path, fmt=args.format, images=args.images, on_invalid="skip")
    problems = validate(ds, check_images=not args.no_images)
    for pr in problems:
        print(json.dumps(pr.to_dict()) if args.json else str(pr))
    n_err = sum(p.severity == "error" for p in problems)
    n_warn = len(problems) - n_err
    s = ds.summary()
    print(f"{args.path}: {s['images']} images, {s['annotations']} boxes, {len(ds.categories)} categories; "
          f"{n_err} error(s), {n_warn} warning(s)", file=sys.stderr if args.json else sys.stdout)  # --json: stdout is JSON lines
    return 1 if n_err else 0


def cmd_convert(args: argparse.Namespace) -> int:
    from ..formats import load_dataset, save_coco, save_ultralytics, save_yolo

    ds = load_dataset(args.path, fmt=args.src_format, images=args.images, names=args.names, split=args.split)
    if args.dst_format == "coco":
        save_coco(ds, args.out)
    elif args.dst_format == "ultralytics":
        save_ultralytics(ds, args.out)
    else:
        save_yolo(ds, args.out, link_images=True)  # images/ beside labels/: the folder is a data set
    logger.info(f"wrote {args.out}: {len(ds.images)} images, {len(ds.annotations)} boxes ({args.dst_format})")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from ..formats import load_dataset

    ds = load_dataset(args.path, fmt=args.format, images=args.images, on_invalid="skip")
    print(json.dumps(ds.summary(), indent=2))
    for x in ds.skipped[:10]:  # what could not be loaded, named (validate lists every problem)
        logger.warning(f"{x.file}: {x.item}: {x.message} (not loaded)")
    if len(ds.skipped) > 10:
        logger.warning(f"... and {len(ds.skipped) - 10} more; qualmet validate lists them all")
    return 1 if ds.skipped else 0
