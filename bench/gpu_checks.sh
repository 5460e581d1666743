#!/usr/bin/env bash
# Everything that needs a GPU, in one go (a borrowed GPU's time is short), from the repository
# root:  [GPU_BUDGET=540] bash bench/gpu_checks.sh [LOG_FOLDER]
# The steps run in order of what is least known, each within its own limit and all within
# GPU_BUDGET seconds (default 540: one device command may run 600 s); a step that no longer fits
# is skipped and said so, so one call always ends with its logs:
#   1. bench/check_cuda.py: the CUDA step against the CPU step, the CUDA graph against eager for
#      every capturable method;
#   2. bench/profile_step.py: where the ASKD step's time goes (parts and kernel table);
#   3. the quick start on CUDA through the scripts: fast + bf16 + CUDA graph (the teacher
#      stopped after 3 epochs and resumed to 5), an ASKD student;
#   4. bench/benchmark.py --device cuda --packing 1,2,4,8: K ASKD runs at once on the GPU (what
#      sweep.py --runs-per-gpu K does, under MPS when available), its section of BENCHMARKS.md;
#      then bench/benchmark.py --device cuda --teacher-cache: the graphed step with the teacher's
#      logits from the teacher cache beside the graphed step that runs the teacher;
#   5. bench/eval_cost.py --device cuda: the evaluation of an epoch against its training;
#   6. sweep.py --runs-per-gpu 2 (the memory probe, MPS, two runs at once);
#   7. CRD and the plain path through the scripts; the method battery on DKD (its cuda_graph
#      check: the graphed run against the eager one); bench/benchmark.py --device cuda (the
#      single-run table, measured before on an H200: last).
# Each step has its own log (LOG_FOLDER, default $OUT or ./gpu_logs); the last lines of each
# are printed. Exit status: the number of failed steps (skipped ones are not failures).
set -u
logs=${1:-${OUT:-gpu_logs}}
mkdir -p "$logs"
work=$(mktemp -d)
export PYTHONUNBUFFERED=1
failures=0

budget=${GPU_BUDGET:-540}
step() {  # step NAME SECONDS COMMAND...
    local name=$1 limit=$2 code left=$((budget - SECONDS)) start=$SECONDS
    shift 2
    if [ "$left" -lt 30 ]; then
        echo "== $name: skipped, ${left}s of GPU_BUDGET left ($*)"
        return
    fi
    [ "$limit" -le "$left" ] || limit=$left
    timeout "$limit" "$@" >"$logs/$name.log" 2>&1
    code=$?
    echo "== $name: exit $code after $((SECONDS - start))s ($*)"
    tail -n "${TAIL:-6}" "$logs/$name.log"
    [ "$code" -eq 0 ] || failures=$((failures + 1))
}

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv,noheader
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"

TAIL=14 step check 150 python3 bench/check_cuda.py
TAIL=45 step profile 90 python3 bench/profile_step.py --device cuda --case askd_resnet8x4 --steps 20

data=(dataset synthetic data_dir "$work/data")
fast=(device cuda fast True amp bf16 cuda_graph True tensorboard True)
teacher="$work/teacher/resnet14_best.pth"
step teacher_3_epochs 60 python3 train_teacher.py -cfg configs/quickstart/teacher.yaml "${data[@]}" "${fast[@]}" \
    save_folder "$work/teacher" epochs 3
step teacher_resumed 45 python3 train_teacher.py -cfg configs/quickstart/teacher.yaml "${data[@]}" "${fast[@]}" \
    save_folder "$work/teacher"
step student_askd 60 python3 train_student.py -cfg configs/quickstart/student.yaml "${data[@]}" "${fast[@]}" \
    path_t "$teacher" save_folder "$work/askd"
ls -R "$work/askd" >"$logs/run_folder.txt" 2>&1

TAIL=20 step packing 150 python3 bench/benchmark.py --device cuda --packing 1,2,4,8 --warmup 10 --steps 200
TAIL=24 step teacher_cache 150 python3 bench/benchmark.py --device cuda --teacher-cache --warmup 10 --repeats 5 --steps 50
TAIL=8 step eval_cost 60 python3 bench/eval_cost.py --device cuda
TAIL=12 step sweep_packed 90 python3 sweep.py --table similar --pairs res110_res20 --methods vanilla --seeds 2 \
    --runs-per-gpu 2 --save_root "$work/sweep" --set dataset synthetic data_dir "$work/sweep_data" epochs 2 lr_decay_epochs 1 device cuda fast True
cat "$work"/sweep/similar/vanilla/resnet20/seed_*/peak_memory.json >>"$logs/sweep_packed.log" 2>&1
step student_crd 60 python3 train_student.py -cfg configs/quickstart/student.yaml "${data[@]}" "${fast[@]}" \
    path_t "$teacher" save_folder "$work/crd" distill crd nce_k 256 epochs 2 lr_decay_epochs 1
step student_plain_path 60 python3 train_student.py -cfg configs/quickstart/student.yaml "${data[@]}" \
    device cuda num_workers 8 path_t "$teacher" save_folder "$work/plain" epochs 2 lr_decay_epochs 1
TAIL=16 step battery_dkd 90 python3 check_method.py dkd --no-ddp
TAIL=40 step benchmark 420 python3 bench/benchmark.py --device cuda --workers 8
cp BENCHMARKS.md "$logs/BENCHMARKS.md"
rm -rf "$work"
exit "$failures"
