#!/usr/bin/env bash
# The device check of the GPU placement (issue 17), on one CUDA GPU, in a few minutes:
#   1. the GPU tests (tests/embedding/test_embedding_cuda.py) on the real device, not the simulator;
#   2. streamrec bench embedding --device cuda --json;
#   3. streamrec bench training --device cuda --json;
# then docs/benchmarks/gpu-check.json: date, GPU, versions, test counts and every bench figure.
# Logs and JSON also go to $OUT when it is set. Runs from the repository root:
#   scripts/gpu_check.sh            (PYTHON=python3 by default; wheels in .whl/ are installed first)
set -u
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
LOGS=${OUT:-runs/gpu-check}
mkdir -p "$LOGS" docs/benchmarks
if compgen -G ".whl/*.whl" >/dev/null; then  # dependencies the GPU machine lacks, carried as wheels
  $PYTHON -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} NUMBA_ENABLE_CUDASIM=0 PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4
start=$(date +%s)
nvidia-smi -L | tee "$LOGS/gpu.txt"

echo "== GPU tests"
$PYTHON -m pytest -q -p no:cacheprovider tests/embedding/test_embedding_cuda.py 2>&1 | tee "$LOGS/gpu-tests.log"
tests_rc=${PIPESTATUS[0]}
if [ "$tests_rc" != 0 ]; then  # again through numba's own launch path: tells a launch bug from a kernel bug
  echo "== GPU tests, STREAMREC_CUDA_DIRECT_LAUNCH=0"
  STREAMREC_CUDA_DIRECT_LAUNCH=0 $PYTHON -m pytest -q -p no:cacheprovider tests/embedding/test_embedding_cuda.py \
    2>&1 | tail -5 | tee "$LOGS/gpu-tests-dispatcher.log"
  [ "${PIPESTATUS[0]}" = 0 ] && export STREAMREC_CUDA_DIRECT_LAUNCH=0
fi
echo "== bench embedding --device cuda"
$PYTHON -m streamrec bench embedding --device cuda --json >"$LOGS/bench-embedding.json" 2>"$LOGS/bench-embedding.log"
emb_rc=$?
tail -3 "$LOGS/bench-embedding.log"; cat "$LOGS/bench-embedding.json"
echo "== bench training --device cuda"
$PYTHON -m streamrec bench training --device cuda --json >"$LOGS/bench-training.json" 2>"$LOGS/bench-training.log"
train_rc=$?
tail -3 "$LOGS/bench-training.log"; cat "$LOGS/bench-training.json"

$PYTHON - "$LOGS" "$tests_rc" "$emb_rc" "$train_rc" "$start" <<'PY'
import datetime, json, os, pathlib, re, sys, time
logs, tests_rc, emb_rc, train_rc, start = sys.argv[1], *map(int, sys.argv[2:])
def load(name):
    try:
        return json.loads(pathlib.Path(logs, name).read_text().strip().splitlines()[-1])
    except Exception as exc:  # a failed bench: say so in the JSON instead of inventing figures
        return {"error": repr(exc)}
tail = pathlib.Path(logs, "gpu-tests.log").read_text().strip().splitlines()
summary = tail[-1] if tail else ""
counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|error|errors|deselected)", summary)}
emb, train = load("bench-embedding.json"), load("bench-training.json")
import numba, torch
result = {
    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    "torch": torch.__version__, "numba": numba.__version__,
    "numba_cuda": emb.get("numba_cuda") or train.get("numba_cuda"),
    "tests": {"command": "pytest tests/embedding/test_embedding_cuda.py (NUMBA_ENABLE_CUDASIM=0)",
              "exit_code": tests_rc, "summary": summary, **counts},
    "bench_embedding": {"exit_code": emb_rc, **emb},
    "bench_training": {"exit_code": train_rc, **train},
    "direct_launch": os.environ.get("STREAMREC_CUDA_DIRECT_LAUNCH", "1") != "0",
    "seconds": round(time.time() - start, 1),
}
text = json.dumps(result, indent=2)
pathlib.Path("docs/benchmarks/gpu-check.json").write_text(text + "\n")
pathlib.Path(logs, "gpu-check.json").write_text(text + "\n")
print(text)
PY
echo "gpu_check: $(( $(date +%s) - start )) s; tests rc=$tests_rc, bench embedding rc=$emb_rc, bench training rc=$train_rc"
[ "$tests_rc" = 0 ] && [ "$emb_rc" = 0 ] && [ "$train_rc" = 0 ]
