"""A stand-in for your own trainer, as `[detector] command` runs it: train on the COCO file {train},
predict the COCO file {test}, write {out}/predictions.json. It trains qualmet's detector through its
command line in subprocesses, as a foreign trainer would; an environment variable makes it fail, for
the error-path test."""
import os
import subprocess
import sys

train, test, out, seed, iters = sys.argv[1:6]
if os.environ.get("QUALMET_TEST_TRAINER_FAIL"):
    print("loading the data ...\nCUDA out of memory (pretend)", flush=True)
    sys.exit(3)
qualmet = [sys.executable, "-m", "qualmet"]
subprocess.run(qualmet + ["train", train, "--out", f"{out}/model", "--iters", iters, "--seed", seed,
                          "--input-size", "96", "--batch-size", "4", "--eval-every", iters, "--threads", "1",
                          "--val-fraction", "0", "-q"], check=True)
if not os.environ.get("QUALMET_TEST_TRAINER_NO_OUTPUT"):
    subprocess.run(qualmet + ["predict", f"{out}/model", test, "--out", f"{out}/predictions.json", "-q"], check=True)
