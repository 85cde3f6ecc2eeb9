// The core's threads: one process-wide pool, used by every model.
//
// Work is split into chunks whose boundaries depend only on the problem's
// sizes, never on the number of threads; a chunk computes the same thing
// whichever thread runs it. Results are therefore bitwise identical for any
// thread count.
#ifndef RNNCORE_THREAD_POOL_H_
#define RNNCORE_THREAD_POOL_H_

#include <cstdint>
#include <functional>

#include "rnncore/common.h"

namespace rnncore {

// Threads used by compute calls. Defaults to RNNCORE_NUM_THREADS when set,
// else the number of cores this process may run on.
int GetNumThreads();
// n >= 1. Takes effect for the next compute call.
void SetNumThreads(int n);

// Calls fn(i) for every i in [0, num_chunks), spread over the pool. Runs
// everything on the calling thread when there is one chunk, one thread, when
// called from inside another ParallelFor, or when another caller is using the
// pool (so concurrent callers never oversubscribe the cores).
void ParallelFor(Index num_chunks, const std::function<void(Index)>& fn);

// How many ParallelFor calls so far handed work to the pool's threads (the
// others ran on their caller): a diagnostic, e.g. to check that small steps
// never wake the pool.
std::uint64_t PoolDispatches();

}  // namespace rnncore

#endif  // RNNCORE_THREAD_POOL_H_
