#!/bin/bash
# Al2O3 (corundum) data generation under docs/al2o3_protocol.md: two single-process QE jobs side by side.
# Resumable: rerun this script; finished keys are skipped, per-structure locks keep the jobs apart, and the
# shared dfpt_work/records.jsonl queue keeps each data set's records apart (each line names its output).
#   nohup setsid bash data/generate_al2o3.sh > dfpt_work/generate_al2o3.log 2>&1 < /dev/null &
# `bash data/generate_al2o3.sh a` (or b) runs one job only, e.g. to start it on the core a finished SiO2 job left.
# Job A: DFPT records (eps_inf + Born charges), job B: pw.x-only records first, then DFPT from the other end.
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1
G="python -m ase_etgnn.dfpt generate --workdir dfpt_work --output data/al2o3_dfpt.h5 --nprocs 1"
S=data/seeds/corundum.extxyz
job_a() {
  $G --seeds $S --tag corundum-ph --seed 4 --n-structures 150 --rms 0.02 0.12 --strain-max 0.02 --ph
  $G --seeds $S --tag corundum-ph --seed 4 --n-structures 50 --start-index 150 --rms 0.02 0.12 --strain-max 0.02 --ph
}
job_b() {
  $G --seeds $S --tag corundum-pw --seed 5 --n-structures 150 --rms 0.02 0.20 --strain-max 0.02 --no-ph
  $G --seeds $S --tag corundum-ph --seed 4 --n-structures 50 --start-index 150 --rms 0.02 0.12 --strain-max 0.02 --ph
}
export G S
jobs="${1:-a b}"
[[ $jobs == *a* ]] && nice -n 5 bash -c "$(declare -f job_a); job_a" &
[[ $jobs == *b* ]] && nice -n 10 bash -c "$(declare -f job_b); job_b" &
wait
echo "generate_al2o3.sh finished $(date)"
