"""Fuzz the COCO, VOC, YOLO and CSV importers with byte-mutated valid inputs for a bounded time.

Prints inputs tried, crashes (exceptions other than qualmet's own error types; goal 0) and items lost
(records neither loaded nor listed in ``dataset.skipped``, checked on COCO inputs that still parse;
goal 0). Usage: python benchmarks/fuzz_importers.py [--seconds 60] [--seed 0]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

from qualmet.errors import QualmetError
from qualmet.formats import load_csv, load_voc, load_yolo, parse_coco

COCO = {"images": [{"id": i, "file_name": f"f{i}.png", "width": 40, "height": 30} for i in range(1, 4)],
        "annotations": [{"id": k, "image_id": 1 + k % 3, "category_id": 1 + k % 2, "bbox": [1.0 + k, 2.0, 10.0, 8.0],
                         "area": 80.0, "iscrowd": 0} for k in range(1, 7)],
        "categories": [{"id": 1, "name": "panda"}, {"id": 2, "name": "rock"}]}
VOC = (b"<annotation><filename>f1.png</filename><size><width>40</width><height>30</height></size>"
       b"<object><name>panda</name><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>11</xmax><ymax>10</ymax></bndbox></object>"
       b"</annotation>")
YOLO = b"0 0.5 0.5 0.25 0.25\n1 0.2 0.3 0.1 0.1\n"
CSV = b"filename,width,height,class,xmin,ymin,xmax,ymax\nf1.png,40,30,panda,1,2,11,10\nf2.png,40,30,rock,3,4,9,9\n"


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    b = bytearray(data)
    for _ in range(int(rng.integers(1, 6))):
        op = rng.integers(0, 5)
        pos = int(rng.integers(0, max(1, len(b))))
        if op == 0 and b:
            b[pos % len(b)] = int(rng.integers(0, 256))
        elif op == 1:
            b.insert(pos, int(rng.choice(list(b'{}[]",:0123456789-.eE\n<>/ ')) if rng.random() < 0.8 else rng.integers(0, 256)))
        elif op == 2 and b:
            del b[pos % len(b): pos % len(b) + int(rng.integers(1, 8))]
        elif op == 3:
            b = b[:pos]
        else:
            src = int(rng.integers(0, max(1, len(b))))
            b[pos:pos] = b[src:src + int(rng.integers(1, 16))]
    return bytes(b)


def json_mutate(rng: np.random.Generator) -> object:
    """Structure-aware: replace one value somewhere in the COCO dict by an odd one."""
    d = json.loads(json.dumps(COCO))
    odd = [None, -1, 0, 2**70, 1.5, float("nan"), "7", "", [], {}, [1, 2], True, "../../etc/passwd", 1e308]
    key = rng.choice(["images", "annotations", "categories"])
    rec = d[key][int(rng.integers(0, len(d[key])))]
    field = rng.choice(list(rec.keys()))
    if rng.random() < 0.2:
        del rec[field]
    else:
        rec[field] = odd[int(rng.integers(0, len(odd)))]
    return d


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    tried, crashes, lost = Counter(), [], 0
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        (t / "images").mkdir()
        for i in (1, 2, 3):
            cv2.imwrite(str(t / "images" / f"f{i}.png"), np.zeros((30, 40, 3), np.uint8))
        deadline = time.time() + args.seconds
        while time.time() < deadline:
            kind = ["coco_bytes", "coco_struct", "voc", "yolo", "csv"][int(rng.integers(0, 5))]
            tried[kind] += 1
            try:
                if kind == "coco_bytes":
                    raw = mutate(json.dumps(COCO).encode(), rng)
                    try:
                        d = json.loads(raw)
                    except (json.JSONDecodeError, UnicodeDecodeError):
                        continue  # the file-level loader reports these with line/column (tested elsewhere)
                    parse_coco(d, source="fuzz")
                elif kind == "coco_struct":
                    d = json_mutate(rng)
                    ds = parse_coco(d, source="fuzz")
                    n_in = sum(len(d.get(k, [])) for k in ("images", "annotations", "categories"))
                    n_out = len(ds.images) + len(ds.annotations) + len(ds.categories) + len(ds.skipped)
                    lost += max(0, n_in - n_out)
                elif kind == "voc":
                    folder = t / "voc"
                    folder.mkdir(exist_ok=True)
                    (folder / "a.xml").write_bytes(mutate(VOC, rng))
                    load_voc(folder, images=t / "images")
                elif kind == "yolo":
                    lab = t / "labels"
                    lab.mkdir(exist_ok=True)
                    (lab / "classes.txt").write_text("panda\nrock\n")
                    (lab / "f1.txt").write_bytes(mutate(YOLO, rng))
                    load_yolo(lab, images=t / "images")
                else:
                    (t / "l.csv").write_bytes(mutate(CSV, rng))
                    load_csv(t / "l.csv", images=t / "images")
            except QualmetError:
                pass
            except Exception as exc:  # a crash: not one of qualmet's own, named errors
                crashes.append((kind, f"{type(exc).__name__}: {exc}", traceback.format_exc(limit=3)))
    print(f"inputs tried: {sum(tried.values())} ({dict(tried)}) in {args.seconds:.0f} s")
    print(f"crashes (non-qualmet exceptions): {len(crashes)}")
    for (kind, msg), n in Counter((k, m.split(":")[0]) for k, m, _ in crashes).most_common(10):
        print(f"  {kind}: {msg} x{n}")
    print(f"items lost (neither loaded nor listed as skipped): {lost}")


if __name__ == "__main__":
    main()
