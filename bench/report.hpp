// SPDX-License-Identifier: Apache-2.0
#pragma once
// What a brokerha-bench run prints. A progress line on stderr once a second; at the end a
// human summary on stdout, then one machine-readable line, `RESULT key=value ...` (keys in
// options.cpp's usage text; no spaces inside values), the last line of stdout: bench/compare
// and bench/smoke.sh parse it, so its keys and number formats are an interface. Called on the
// bench's one thread.

#include <cstdint>

namespace brokerha::bench {

class Engine;
struct ProgressMarks;

/// The progress line at `now`: rates since `last`, which is then moved to now.
void print_progress(const Engine& e, std::uint64_t now, ProgressMarks& last);

/// The traffic summary and RESULT line. 1 when the run completed with loss, duplicates,
/// reordering, invalid or rejected messages, else 0.
int print_traffic_result(const Engine& e);

/// The idle-connections summary and RESULT line.
void print_idle_result(const Engine& e);

}  // namespace brokerha::bench
