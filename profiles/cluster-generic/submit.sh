#!/usr/bin/env bash
# A stand-in for a cluster's submit command (sbatch, qsub) for Snakemake's cluster-generic executor:
# runs the jobscript in the background on this machine, logs the request, prints a job id.
#
#   submit.sh RULE THREADS MEM_MB RUNTIME GPU JOBSCRIPT
#
# Snakemake follows the job through the marker files its jobscript writes when it ends.
set -euo pipefail
rule=$1 threads=$2 mem_mb=$3 runtime=$4 gpu=$5 jobscript=$6
mkdir -p logs/cluster
nohup bash "$jobscript" > "logs/cluster/$(basename "$jobscript").out" 2>&1 < /dev/null &
id=$!
echo "submitted $jobscript rule=$rule threads=$threads mem_mb=$mem_mb runtime=$runtime gpu=$gpu id=$id" >> logs/cluster/submit.log
echo "$id"
