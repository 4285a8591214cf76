// Thread count and the persistent worker pool of the CPU kernel.
#pragma once

#include <cstdint>
#include <functional>

namespace gsi {

// Default thread count: set_num_threads, else $GSCODEC_NUM_THREADS, else $OMP_NUM_THREADS,
// else the CPUs this process may run on.
int get_num_threads();
void set_num_threads(int n);  // std::invalid_argument unless n >= 1

// num_threads 0: get_num_threads(); negative: std::invalid_argument.
int resolve_threads(int num_threads);

// Run fn(item) for item in [0, n) on up to nt threads, dynamically scheduled; the caller
// works too. Exceptions of fn are rethrown here.
void parallel_dynamic(int64_t n, int nt, const std::function<void(int64_t)>& fn);

// A forked child must not use the parent's workers: call once when the module loads.
void install_fork_handler();

}  // namespace gsi
