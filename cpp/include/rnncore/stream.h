// Step-by-step inference: a stream carries the state of a unidirectional
// model from one call to the next, for data that arrives a frame at a time
// (audio chunks, sensor readings, a decoder's tokens). Stepping a stream
// through a sequence, in one call or in pieces, gives what one eval-mode
// Model::Forward over the whole sequence gives.
//
// Each row (sequence) of a stream has its own state and step count; rows
// reset at different times are at different steps, which batch norm
// honours: row b at step k reads running-statistics row min(k, S - 1).
//
// Shapes (L layers, B rows, P out width, H hidden):
//   h (L, B, P), c (L, B, H) (LSTM only), step counts (B)
//
// A stream reads its model's parameters live (each call uses the values the
// model holds then). One stream is not thread-safe; different streams of one
// model may step concurrently.
#ifndef RNNCORE_STREAM_H_
#define RNNCORE_STREAM_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "rnncore/allocator.h"
#include "rnncore/common.h"
#include "rnncore/model.h"

namespace rnncore {

template <typename T>
class Stream {
 public:
  // model: unidirectional; batch >= 1. The state starts at zero. Throws
  // InvalidArgument.
  Stream(std::shared_ptr<const Model<T>> model, Index batch);

  const Model<T>& model() const { return *model_; }
  Index batch() const { return batch_; }

  // Steps every row through x (steps, B, input), time-major; writes out
  // (steps, B, P). On an exception the state is unchanged.
  void Step(Index steps, const T* x, T* out);

  // Steps the n distinct rows rows[0..n) only: x (steps, n, input), out
  // (steps, n, P), in the order of rows. The other rows are untouched.
  void StepRows(Index steps, Index n, const Index* rows, const T* x, T* out);

  const T* h() const { return h_.data(); }
  const T* c() const { return lstm() ? c_.data() : nullptr; }
  const std::int64_t* step_counts() const { return steps_.data(); }

  // Replaces the state of every row (h (L, B, P); c (L, B, H), LSTM only;
  // null: zeros). Step counts are unchanged.
  void SetState(const T* h, const T* c);
  // Replaces the state of row b (h (L, P); c (L, H), LSTM only; null:
  // zeros) and zeroes its step count: the row starts a new sequence.
  void StartRow(Index b, const T* h, const T* c);
  // Zeroes the state and the step count of row b (every row: Reset()).
  void ResetRow(Index b);
  void Reset();
  // Changes the number of rows: rows below both sizes keep their state and
  // step count, new rows start at zero.
  void Resize(Index batch);

 private:
  bool lstm() const { return model_->config().cell == CellKind::kLstm; }
  Index layers() const { return model_->config().num_layers; }
  Index out_size() const { return model_->config().out_size(); }
  Index hidden() const { return model_->config().hidden_size; }
  // The running-statistics row a row at step k starts from (0 unless the
  // model's norm is per-step batch norm), given RunningRows().
  Index Offset(std::int64_t k, Index running_rows) const;

  std::shared_ptr<const Model<T>> model_;
  Index batch_ = 0;
  Buffer<T> h_, c_;                  // the state
  std::vector<std::int64_t> steps_;  // per row
  // Scratch, kept between calls: the next state, and a group's gathered rows.
  Buffer<T> h_next_, c_next_, gx_, gh_, gc_, gout_, ghn_, gcn_;
};

}  // namespace rnncore

#endif  // RNNCORE_STREAM_H_
