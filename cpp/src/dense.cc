#include "rnncore/dense.h"

#include "parallel_chunks.h"
#include "sequence_gemm.h"

namespace rnncore {
namespace dense {

template <typename T>
void Forward(Index R, Index D, Index N, const T* x, const T* w, const T* b, T* y) {
  Require(R >= 0 && D >= 1 && N >= 1, "dense::Forward: bad sizes");
  if (R == 0) return;
  internal::InputProjection(x, R, D, D, w, N, y);
  if (!b) return;
  const auto bias = ConstVectorMap<T>(b, N);
  internal::ForChunks(R, internal::kRowChunk, [&](Index r0, Index n) {
    for (Index r = r0; r < r0 + n; ++r) VectorMap<T>(y + r * N, N) += bias;
  });
}

template <typename T>
void Backward(Index R, Index D, Index N, const T* x, const T* gy, const T* w, T* dx, T* dw, T* db) {
  Require(R >= 0 && D >= 1 && N >= 1, "dense::Backward: bad sizes");
  if (R == 0) return;
  // db (the column sums of gy) is summed in the same pass as dw.
  internal::WeightGradient<T>(gy, R, N, N, x, D, D, dw, nullptr, 0, 0, nullptr, db);
  if (dx) internal::ProjectBack(gy, R, N, w, D, dx, D);
}

template void Forward<float>(Index, Index, Index, const float*, const float*, const float*, float*);
template void Forward<double>(Index, Index, Index, const double*, const double*, const double*,
                              double*);
template void Backward<float>(Index, Index, Index, const float*, const float*, const float*, float*,
                              float*, float*);
template void Backward<double>(Index, Index, Index, const double*, const double*, const double*,
                               double*, double*, double*);

}  // namespace dense
}  // namespace rnncore
