// How the core splits work over its threads: fixed chunks whose boundaries
// depend only on the problem's sizes (rnncore/thread_pool.h).
#ifndef RNNCORE_PARALLEL_CHUNKS_H_
#define RNNCORE_PARALLEL_CHUNKS_H_

#include <algorithm>

#include "rnncore/common.h"
#include "rnncore/thread_pool.h"

namespace rnncore {
namespace internal {

// Chunk sizes for splitting work over threads. They depend on nothing but the
// problem, so a chunk's result never depends on the thread count.
constexpr Index kRowChunk = 256;     // rows of (T*B, .) matrices
constexpr Index kUnitChunk = 256;    // rows of weight-gradient matrices, at most
constexpr Index kPackChunk = 4;      // panels of a matrix being packed
constexpr Index kReduceChunk = 256;  // rows of a weight gradient's reduction
constexpr Index kStepChunk = 128;    // output columns of a per-step product (StepMatrix)
// A per-step product is split only when it has at least this many
// multiply-adds: below it, waking threads costs more than it saves.
constexpr Index kStepParallelMacs = Index(1) << 16;
// The first step's two products (the input's and the state's) are split only
// when together they have at least this many. A first step is often a whole
// call (a stream's single step), which finds the pool's threads asleep: waking
// them costs more than a step of a small model takes, and a server stepping
// many small streams from its own threads should never pay it.
constexpr Index kFirstStepParallelMacs = Index(1) << 18;

// A step's pointwise work over its batch rows is split when it touches at
// least this many values, in chunks of kStepRows rows.
constexpr Index kStepParallelValues = Index(1) << 13;
constexpr Index kStepRows = 8;
// A step's product is split by rows instead of columns when its weight
// matrix takes at most this many bytes (StepMatrix::RowSplit).
constexpr Index kRowSplitBytes = Index(256) << 10;

inline Index NumChunks(Index n, Index chunk) { return (n + chunk - 1) / chunk; }

// Rows per chunk of a weight gradient of n rows: a quarter of them, so that a
// small one (an RNN's, n = H) is split too, within [64, kUnitChunk]. Smaller
// chunks read the packed input once more each.
inline Index UnitChunk(Index n) { return std::clamp<Index>((n + 3) / 4, 64, kUnitChunk); }

// fn(begin, count) over [0, n) in fixed chunks, in parallel.
template <typename F>
void ForChunks(Index n, Index chunk, F&& fn) {
  ParallelFor(NumChunks(n, chunk), [&](Index c) {
    const Index begin = c * chunk;
    fn(begin, std::min(chunk, n - begin));
  });
}

// fn(b) for every row b < rows of a step whose rows are width values wide;
// rows are independent, so how they are split changes nothing.
template <typename F>
void ForRows(Index rows, Index width, F&& fn) {
  if (rows * width < kStepParallelValues) {
    for (Index b = 0; b < rows; ++b) fn(b);
    return;
  }
  ForChunks(rows, kStepRows, [&](Index b0, Index n) {
    for (Index b = b0; b < b0 + n; ++b) fn(b);
  });
}

// fn(c0, n) over the columns of a (rows, width) step-sized matrix whose
// columns are independent: in fixed chunks of kStepChunk when it holds at
// least kStepParallelValues values, else all at once.
template <typename F>
void ForColumns(Index rows, Index width, F&& fn) {
  if (rows * width < kStepParallelValues)
    fn(0, width);
  else
    ForChunks(width, kStepChunk, fn);
}

}  // namespace internal
}  // namespace rnncore

#endif  // RNNCORE_PARALLEL_CHUNKS_H_
