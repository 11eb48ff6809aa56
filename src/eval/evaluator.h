// The evaluation API in one include: evaluate (the scoring loop), records
// (one scored object and its JSON), summary (means and the rank oracle) and
// report (the files a report folder holds). Reports as Markdown, JSON, CSV
// and a chart.
#pragma once

#include "eval/evaluate.h"
#include "eval/records.h"
#include "eval/report.h"
#include "eval/summary.h"
