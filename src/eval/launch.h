// Evaluation and study shared out over processes on this machine
// (`rsam eval --nproc`, `rsam study --nproc`), beside train::launch_local:
// the launcher starts copies of the program (argv), each copy finds its
// share from the environment, and the launcher merges.
#pragma once

#include "eval/evaluator.h"
#include "eval/study.h"

namespace rsam::eval {

struct LaunchedEval {
  int exit_code = 0;    // non-zero: a process failed with it (nothing merged)
  bool worker = false;  // this process evaluated one share for a launcher
  EvalResult result;    // the launcher's (or a single process's) merged result
};

// evaluate(o) in `nproc` processes, the program being started again with
// `argv`. In a started copy (RSAM_EVAL_SHARDS set) this evaluates every
// nproc-th sample into the launcher's temporary folder and returns worker.
// In the launcher it holds the report folder, waits for the copies, merges
// their records and writes the report; with nproc 1 it is evaluate(o).
LaunchedEval evaluate_launched(EvalOptions o, int nproc, char** argv);

// run_study(o) in `nproc` processes: the launcher holds the run folder and
// starts two rounds of copies (every run must exist before any seed is
// evaluated; RSAM_STUDY_PHASE tells a copy its round), then merges and
// writes the report. Returns 0, or the exit code of a failed copy.
int study_launched(StudyOptions o, int nproc, char** argv);

}  // namespace rsam::eval
