// Tests of the C++ API as an embedding program uses it (no Python).
//
//   * lstm/gru/rnn ForwardPass::Run over a whole sequence equals a loop of
//     Iterate calls (the hoisted input GEMM against one step at a time);
//   * Model::Backward matches central finite differences of Model::Forward in
//     double, for every cell and normalization, and with dropout and zoneout
//     (masks replayed from the call's seed);
//   * float32 forward and backward match float64 at sizes that take the
//     packed products and the vectorized activations (on every ISA the test
//     is built for, NEON included);
//   * the dense layer (rnncore/dense.h) matches plain loops;
//   * tapes are single-use and bound to their model;
//   * results are bitwise identical for 1, 2 and 3 threads;
//   * float16 weights (Model::UseHalfWeights) give the model of the rounded
//     values;
//   * model files (rnncore/model_file.h): a written buffer and file read back
//     the same; every truncation of a file, and an out-of-range offset, throw
//     InvalidArgument; a Reader reads chosen tensors into the caller's memory
//     (adjacent or not, in any order), refuses bad targets before it reads
//     anything, and notices a file truncated after it was opened; a model
//     whose parameters are left unset (Model(config, false)) and then read
//     from a file is the model of those parameters;
//   * streams (rnncore/stream.h) stepped one step or a chunk at a time equal
//     the whole-sequence Forward, batch norm's rows at each row's own step;
//     a StreamBatcher (rnncore/batcher.h) stepped from 8 threads gives each
//     stream what its own Stream gives; unknown streams and a closed batcher
//     throw.
#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "rnncore/batcher.h"
#include "rnncore/dense.h"
#include "rnncore/gru.h"
#include "rnncore/lstm.h"
#include "rnncore/model.h"
#include "rnncore/model_file.h"
#include "rnncore/rnn.h"
#include "rnncore/stream.h"
#include "rnncore/thread_pool.h"

namespace {

int failures = 0;

void Check(bool ok, const std::string& what) {
  if (!ok) {
    ++failures;
    std::printf("FAILED: %s\n", what.c_str());
  }
}

std::vector<double> Random(std::mt19937& rng, rnncore::Index n, double scale = 1.0) {
  std::uniform_real_distribution<double> u(-scale, scale);
  std::vector<double> v(static_cast<size_t>(n));
  for (auto& e : v) e = u(rng);
  return v;
}

// Run (whole sequence) against Iterate (one step at a time) for one cell.
template <typename Forward, bool kLstm>
void RunMatchesIterate(const char* name, rnncore::Index gates, std::mt19937& rng) {
  using rnncore::Index;
  const Index T = 6, B = 3, D = 4, H = 5;
  rnncore::CellConfig cfg;
  cfg.input = D;
  cfg.hidden = H;
  const auto w_ih = Random(rng, gates * H * D), w_hh = Random(rng, gates * H * H);
  const auto b_ih = Random(rng, gates * H), b_hh = Random(rng, gates * H);
  rnncore::CellWeights<double> w;
  w.w_ih = w_ih.data();
  w.w_hh = w_hh.data();
  w.b_ih = b_ih.data();
  w.b_hh = b_hh.data();
  const auto x = Random(rng, T * B * D), h0 = Random(rng, B * H), c0 = Random(rng, B * H);
  const Forward fwd(cfg, w);
  std::vector<double> y(static_cast<size_t>(T * B * H)), hn(B * H), cn(B * H);
  const rnncore::StepIndex seq(T, B, nullptr, false);
  std::vector<double> h = h0, c = c0, h2(B * H), c2(B * H);
  if constexpr (kLstm) {
    fwd.Run(seq, x.data(), D, h0.data(), c0.data(), y.data(), H, hn.data(), cn.data(), nullptr);
    for (Index t = 0; t < T; ++t) {
      fwd.Iterate(B, x.data() + t * B * D, h.data(), c.data(), h2.data(), c2.data());
      h.swap(h2);
      c.swap(c2);
    }
  } else {
    fwd.Run(seq, x.data(), D, h0.data(), y.data(), H, hn.data(), nullptr);
    for (Index t = 0; t < T; ++t) {
      fwd.Iterate(B, x.data() + t * B * D, h.data(), h2.data());
      h.swap(h2);
    }
  }
  double err = 0;
  for (Index i = 0; i < B * H; ++i) err = std::max(err, std::abs(h[i] - hn[i]));
  // Same arithmetic in another grouping: a few ulps of O(1) values.
  Check(err < 1e-13, std::string(name) + ": Run vs Iterate differ by " + std::to_string(err));
}

struct Case {
  const char* name;
  rnncore::CellKind cell;
  rnncore::Norm norm;
  bool training;
  bool regularized = false;
};

constexpr std::uint64_t kSeed = 42;

double Loss(const rnncore::Model<double>& m, rnncore::Index T, rnncore::Index B,
            const std::vector<double>& x, const std::vector<double>& h0,
            const std::vector<double>& c0, const std::vector<std::int64_t>& lengths,
            const std::vector<double>& r_out, const std::vector<double>& r_h, bool training) {
  // Every call replays the same dropout and zoneout masks (seed kSeed).
  const auto& c = m.config();
  const rnncore::Index S = c.num_layers * c.directions();
  std::vector<double> out(r_out.size()), hn(static_cast<size_t>(S * B * c.out_size())),
      cn(static_cast<size_t>(S * B * c.hidden_size));
  m.Forward(T, B, x.data(), h0.data(), c0.data(), lengths.data(), out.data(), hn.data(), cn.data(),
            training, nullptr, kSeed);
  double l = 0;
  for (size_t i = 0; i < out.size(); ++i) l += r_out[i] * out[i];
  for (size_t i = 0; i < hn.size(); ++i) l += r_h[i] * hn[i];
  return l;
}

void GradientCheck(const Case& tc, std::mt19937& rng) {
  using rnncore::Index;
  const Index T = 4, B = 3, D = 3, H = 4;
  rnncore::ModelConfig cfg;
  cfg.cell = tc.cell;
  cfg.input_size = D;
  cfg.hidden_size = H;
  cfg.num_layers = 2;
  cfg.bidirectional = true;
  cfg.norm = tc.norm;
  if (tc.regularized) {
    cfg.dropout = 0.3;
    cfg.input_dropout = 0.2;
    cfg.recurrent_dropout = 0.3;
    cfg.zoneout = 0.25;
  }
  rnncore::Model<double> m(cfg);
  auto p = Random(rng, m.num_parameters(), 0.7);
  std::copy(p.begin(), p.end(), m.parameters());
  const Index S = 4;
  const auto x = Random(rng, T * B * D), h0 = Random(rng, S * B * H), c0 = Random(rng, S * B * H);
  const std::vector<std::int64_t> lengths = {4, 2, 3};
  const auto r_out = Random(rng, T * B * 2 * H), r_h = Random(rng, S * B * H);
  if (!tc.training) {  // give eval mode running statistics to use
    std::vector<double> o(r_out.size()), hn(r_h.size()), cn(r_h.size());
    m.Forward(T, B, x.data(), h0.data(), c0.data(), nullptr, o.data(), hn.data(), cn.data(), true,
              nullptr);
  }
  rnncore::ModelTape<double> tape;
  std::vector<double> out(r_out.size()), hn(r_h.size()), cn(r_h.size());
  m.Forward(T, B, x.data(), h0.data(), c0.data(), lengths.data(), out.data(), hn.data(), cn.data(),
            tc.training, &tape, kSeed);
  std::vector<double> dx(x.size()), dh0(h0.size()), dc0(c0.size());
  std::fill(m.gradients(), m.gradients() + m.num_parameters(), 0.0);
  m.Backward(&tape, r_out.data(), r_h.data(), nullptr, dx.data(), dh0.data(), dc0.data());

  double worst = 0;
  const double eps = 1e-6;
  auto probe = [&](double* v, double analytic) {
    const double old = *v;
    *v = old + eps;
    const double up = Loss(m, T, B, x, h0, c0, lengths, r_out, r_h, tc.training);
    *v = old - eps;
    const double down = Loss(m, T, B, x, h0, c0, lengths, r_out, r_h, tc.training);
    *v = old;
    const double numeric = (up - down) / (2 * eps);
    worst = std::max(worst, std::abs(numeric - analytic) / std::max(1.0, std::abs(numeric)));
  };
  for (Index i = 0; i < m.num_parameters(); i += 7) probe(m.parameters() + i, m.gradients()[i]);
  auto xs = x;
  for (Index i = 0; i < static_cast<Index>(x.size()); i += 5) {
    // x is const in Loss: probe through a copy.
    const double old = xs[i];
    xs[i] = old + eps;
    const double up = Loss(m, T, B, xs, h0, c0, lengths, r_out, r_h, tc.training);
    xs[i] = old - eps;
    const double down = Loss(m, T, B, xs, h0, c0, lengths, r_out, r_h, tc.training);
    xs[i] = old;
    const double numeric = (up - down) / (2 * eps);
    worst = std::max(worst, std::abs(numeric - dx[i]) / std::max(1.0, std::abs(numeric)));
  }
  // Central differences in double: truncation ~1e-12, rounding ~1e-10.
  Check(worst < 1e-6, std::string(tc.name) + ": gradient error " + std::to_string(worst));
}

// Largest |a - b| over max(1, max |b|).
template <typename A, typename B>
double RelErr(const std::vector<A>& a, const std::vector<B>& b) {
  double worst = 0, scale = 1;
  for (size_t i = 0; i < b.size(); ++i) scale = std::max(scale, std::abs(double(b[i])));
  for (size_t i = 0; i < b.size(); ++i)
    worst = std::max(worst, std::abs(double(a[i]) - double(b[i])));
  return worst / scale;
}

// One training call and its backward pass in precision T, from the same
// double parameters and inputs; returns out, dx and the parameter gradients.
template <typename T>
std::vector<std::vector<T>> TrainStep(const rnncore::ModelConfig& cfg, const std::vector<double>& p,
                                      rnncore::Index steps, rnncore::Index batch,
                                      const std::vector<double>& x,
                                      const std::vector<std::int64_t>& lengths,
                                      const std::vector<double>& r_out) {
  auto cast = [](const std::vector<double>& v) { return std::vector<T>(v.begin(), v.end()); };
  rnncore::Model<T> m(cfg);
  std::copy(p.begin(), p.end(), m.parameters());
  const auto xt = cast(x), rt = cast(r_out);
  const rnncore::Index states = cfg.num_layers * cfg.directions() * batch * cfg.hidden_size;
  std::vector<T> out(rt.size()), hn(static_cast<size_t>(states)), cn(hn.size());
  rnncore::ModelTape<T> tape;
  m.Forward(steps, batch, xt.data(), nullptr, nullptr, lengths.data(), out.data(), hn.data(),
            cn.data(), true, &tape);
  std::vector<T> dx(xt.size()), dh0(hn.size()), dc0(hn.size());
  std::fill(m.gradients(), m.gradients() + m.num_parameters(), T(0));
  m.Backward(&tape, rt.data(), nullptr, nullptr, dx.data(), dh0.data(), dc0.data());
  return {out, dx, std::vector<T>(m.gradients(), m.gradients() + m.num_parameters())};
}

void FloatMatchesDouble(std::mt19937& rng) {
  using rnncore::CellKind;
  using rnncore::Norm;
  const rnncore::Index T = 5, B = 16, D = 24, H = 40;  // B: a full row block and leftovers
  const std::pair<CellKind, Norm> cases[] = {
      {CellKind::kRnn, Norm::kNone},  {CellKind::kLstm, Norm::kNone},
      {CellKind::kGru, Norm::kNone},  {CellKind::kLstm, Norm::kLayer},
      {CellKind::kGru, Norm::kBatch}, {CellKind::kRnn, Norm::kBatchInput},
  };
  for (const auto& [cell, norm] : cases) {
    rnncore::ModelConfig cfg;
    cfg.cell = cell;
    cfg.norm = norm;
    cfg.input_size = D;
    cfg.hidden_size = H;
    cfg.bidirectional = true;
    const auto p = Random(rng, rnncore::Model<double>(cfg).num_parameters(), 0.3);
    const auto x = Random(rng, T * B * D), r_out = Random(rng, T * B * 2 * H);
    std::vector<std::int64_t> lengths(B, T);
    lengths[1] = 2;
    lengths[5] = 4;
    const auto f = TrainStep<float>(cfg, p, T, B, x, lengths, r_out);
    const auto d = TrainStep<double>(cfg, p, T, B, x, lengths, r_out);
    // float32 rounding (6e-8) grown through sums of ~100 terms and 5 steps,
    // plus the activations' error (<= 5e-7): ~1e-5 at most; a wrong kernel
    // result is >= 1e-3.
    const char* what[] = {"out", "dx", "parameter gradients"};
    for (int i = 0; i < 3; ++i) {
      const double err = RelErr(f[i], d[i]);
      char msg[160];
      std::snprintf(msg, sizeof msg, "float vs double, cell %d norm %d, %s: %.2e",
                    static_cast<int>(cell), static_cast<int>(norm), what[i], err);
      Check(err < 1e-4, msg);
    }
  }
}

// Model::UseHalfWeights: the weight matrices become float16 values (within
// 2^-11 relative of the originals, and exactly representable), other
// parameters are unchanged, and a batch-1 forward pass (the float16
// kernels) equals the float64 model with the same rounded parameters. A
// float64 model refuses. Input 37 and hidden 19 leave partial vectors.
void HalfWeights(std::mt19937& rng) {
  using rnncore::Index;
  const Index T = 4, D = 37, H = 19;
  for (auto cell : {rnncore::CellKind::kRnn, rnncore::CellKind::kLstm, rnncore::CellKind::kGru}) {
    rnncore::ModelConfig cfg;
    cfg.cell = cell;
    cfg.input_size = D;
    cfg.hidden_size = H;
    cfg.num_layers = 2;
    rnncore::Model<float> f(cfg);
    rnncore::Model<double> d(cfg);
    const Index n = f.num_parameters();
    const auto p = Random(rng, n, 0.5);
    for (Index i = 0; i < n; ++i) f.parameters()[i] = static_cast<float>(p[i]);
    f.UseHalfWeights();
    Check(f.HasHalfWeights(), "HasHalfWeights after UseHalfWeights");
    Index changed = 0;
    bool ok = true;
    for (const auto& info : f.layout()) {
      const bool matrix = info.name.rfind("weight_", 0) == 0;
      for (Index i = info.offset; i < info.offset + info.size(); ++i) {
        const float orig = static_cast<float>(p[i]), now = f.parameters()[i];
        const bool representable = static_cast<float>(Eigen::half(now)) == now;
        if (matrix)
          ok &= representable &&  // half an ulp: 2^-11 relative, 2^-25 below 2^-14
                std::abs(now - orig) <= std::max(std::ldexp(std::abs(orig), -11), 0x1p-25f);
        else
          ok &= now == orig;
        changed += now != orig;
      }
    }
    Check(ok && changed > 0, "UseHalfWeights rounds the weight matrices only");
    for (Index i = 0; i < n; ++i) d.parameters()[i] = f.parameters()[i];
    const auto x = Random(rng, T * D);
    std::vector<float> xf(x.begin(), x.end()), of(T * H), hf(2 * H), cf(2 * H);
    std::vector<double> od(T * H), hd(2 * H), cd(2 * H);
    f.Forward(T, 1, xf.data(), nullptr, nullptr, nullptr, of.data(), hf.data(), cf.data(), false,
              nullptr);
    d.Forward(T, 1, x.data(), nullptr, nullptr, nullptr, od.data(), hd.data(), cd.data(), false,
              nullptr);
    const double err = std::max(RelErr(of, od), RelErr(hf, hd));
    char msg[120];
    std::snprintf(msg, sizeof msg, "float16 weights vs double, cell %d: %.2e",
                  static_cast<int>(cell), err);
    Check(err < 1e-5, msg);  // float32 rounding over 4 steps of ~56-term sums
  }
  rnncore::ModelConfig cfg;
  cfg.input_size = 3;
  cfg.hidden_size = 2;
  rnncore::Model<double> d(cfg);
  bool threw = false;
  try {
    d.UseHalfWeights();
  } catch (const rnncore::InvalidArgument&) {
    threw = true;
  }
  Check(threw && !d.HasHalfWeights(), "a float64 model refuses float16 weights");
}

// dense::Forward / Backward against plain loops, in double, at sizes that
// pack the operands and split rows over chunks.
void DenseMatchesLoops(std::mt19937& rng) {
  using rnncore::Index;
  const Index R = 300, D = 37, N = 70;
  const auto x = Random(rng, R * D), w = Random(rng, N * D), b = Random(rng, N);
  const auto gy = Random(rng, R * N);
  std::vector<double> y(R * N), dx(R * D), dw(N * D, 0.5), db(N, 0.25);
  rnncore::dense::Forward(R, D, N, x.data(), w.data(), b.data(), y.data());
  rnncore::dense::Backward(R, D, N, x.data(), gy.data(), w.data(), dx.data(), dw.data(), db.data());
  double worst = 0;
  for (Index r = 0; r < R; ++r)
    for (Index n = 0; n < N; ++n) {
      double s = b[n];
      for (Index d = 0; d < D; ++d) s += x[r * D + d] * w[n * D + d];
      worst = std::max(worst, std::abs(s - y[r * N + n]));
    }
  for (Index r = 0; r < R; ++r)
    for (Index d = 0; d < D; ++d) {
      double s = 0;
      for (Index n = 0; n < N; ++n) s += gy[r * N + n] * w[n * D + d];
      worst = std::max(worst, std::abs(s - dx[r * D + d]));
    }
  for (Index n = 0; n < N; ++n) {
    double sb = 0.25;
    for (Index r = 0; r < R; ++r) sb += gy[r * N + n];
    worst = std::max(worst, std::abs(sb - db[n]));
    for (Index d = 0; d < D; ++d) {
      double s = 0.5;  // dw is added to
      for (Index r = 0; r < R; ++r) s += gy[r * N + n] * x[r * D + d];
      worst = std::max(worst, std::abs(s - dw[n * D + d]));
    }
  }
  // Sums of at most 301 products of values in [-1, 1]: rounding < 1e-13.
  Check(worst < 1e-12, "dense layer vs loops: " + std::to_string(worst));
}

void TapeRules(std::mt19937& rng) {
  rnncore::ModelConfig cfg;
  cfg.cell = rnncore::CellKind::kGru;
  cfg.input_size = 2;
  cfg.hidden_size = 3;
  rnncore::Model<float> a(cfg), b(cfg);
  std::vector<float> x(4 * 2 * 2, 0.5f), out(4 * 2 * 3), hn(2 * 3), dx(x.size()), dh0(hn.size());
  (void)rng;
  rnncore::ModelTape<float> tape;
  a.Forward(4, 2, x.data(), nullptr, nullptr, nullptr, out.data(), hn.data(), nullptr, true, &tape);
  bool threw = false;
  try {
    b.Backward(&tape, out.data(), nullptr, nullptr, dx.data(), dh0.data(), nullptr);
  } catch (const rnncore::InvalidArgument&) {
    threw = true;
  }
  Check(threw, "a tape used with another model must throw");
  a.Backward(&tape, out.data(), nullptr, nullptr, dx.data(), dh0.data(), nullptr);
  threw = false;
  try {
    a.Backward(&tape, out.data(), nullptr, nullptr, dx.data(), dh0.data(), nullptr);
  } catch (const rnncore::InvalidArgument&) {
    threw = true;
  }
  Check(threw, "a tape used twice must throw");
}

void ThreadInvariance(std::mt19937& rng) {
  rnncore::ModelConfig cfg;
  cfg.cell = rnncore::CellKind::kLstm;
  cfg.input_size = 300;
  cfg.hidden_size = 512;  // large enough that steps are split over threads
  cfg.bidirectional = true;
  cfg.norm = rnncore::Norm::kBatch;
  rnncore::Model<float> m(cfg);
  const auto p = Random(rng, m.num_parameters(), 0.1);
  std::copy(p.begin(), p.end(), m.parameters());
  const rnncore::Index T = 5, B = 16;
  std::vector<float> x(T * B * 300);
  for (auto& v : x) v = static_cast<float>(std::uniform_real_distribution<double>(-1, 1)(rng));
  std::vector<float> ref;
  for (int threads : {1, 2, 3}) {
    rnncore::SetNumThreads(threads);
    std::vector<float> out(T * B * 1024), hn(2 * B * 512), cn(2 * B * 512);
    m.Forward(T, B, x.data(), nullptr, nullptr, nullptr, out.data(), hn.data(), cn.data(), false,
              nullptr);
    if (ref.empty())
      ref = out;
    else
      Check(out == ref, "outputs differ with " + std::to_string(threads) + " threads");
  }
}

// An exception thrown by a chunk of a parallel region reaches the caller, on
// the caller's thread, whichever thread ran the chunk; the other chunks are
// skipped or finish, and the pool keeps working afterwards.
void PoolExceptions() {
  const int saved = rnncore::GetNumThreads();
  rnncore::SetNumThreads(3);
  bool caught = false;
  try {
    rnncore::ParallelFor(300, [](rnncore::Index i) {
      if (i == 237) throw std::runtime_error("chunk 237");
    });
  } catch (const std::runtime_error& e) {
    caught = std::string(e.what()) == "chunk 237";
  }
  Check(caught, "a chunk's exception reaches the caller");
  caught = false;
  try {
    rnncore::ParallelFor(300, [](rnncore::Index i) {
      if (i % 7 == 0) throw std::bad_alloc();  // several chunks, several threads
    });
  } catch (const std::bad_alloc&) {
    caught = true;
  }
  Check(caught, "std::bad_alloc from several chunks reaches the caller once");
  std::vector<int> ran(300, 0);
  rnncore::ParallelFor(300, [&](rnncore::Index i) { ran[static_cast<size_t>(i)] += 1; });
  Check(std::all_of(ran.begin(), ran.end(), [](int n) { return n == 1; }),
        "the pool runs every chunk once after a failed job");
  rnncore::SetNumThreads(saved);
}

void ModelFiles() {
  namespace mf = rnncore::model_file;
  const std::vector<float> w = {1.5f, -2.0f, 3.25f, 0.0f, 7.0f, -0.5f};
  const std::vector<std::uint16_t> h = {0x3C00, 0xC000, 0x7BFF};  // 1, -2, 65504 in F16
  const std::vector<double> d = {3.141592653589793};
  const std::map<std::string, std::string> meta = {{"rnncore", "{\"format_version\": 1}"},
                                                   {"note", "caf\xc3\xa9 \"q\"\n"}};
  const std::vector<mf::TensorData> tensors = {{"w", mf::DType::kF32, {2, 3}, w.data(), 24},
                                               {"h", mf::DType::kF16, {3}, h.data(), 6},
                                               {"d", mf::DType::kF64, {}, d.data(), 8},
                                               {"empty", mf::DType::kI8, {0, 4}, nullptr, 0}};
  const std::vector<unsigned char> bytes = mf::WriteBuffer(meta, tensors);
  auto same = [&](const mf::Contents& c) {
    bool ok = c.header.metadata == meta && c.header.tensors.size() == tensors.size();
    for (std::size_t i = 0; ok && i < tensors.size(); ++i) {
      const mf::TensorInfo& t = c.header.tensors[i];
      ok = t.name == tensors[i].name && t.dtype == tensors[i].dtype &&
           t.shape == tensors[i].shape && c.data[i].size() == tensors[i].nbytes &&
           (tensors[i].nbytes == 0 ||
            std::memcmp(c.data[i].data(), tensors[i].data, tensors[i].nbytes) == 0);
    }
    return ok;
  };
  Check(bytes.size() % 8 == 6 && (bytes[0] | (bytes[1] << 8)) % 8 == 0,
        "model file: the header is padded to a multiple of 8 bytes");
  Check(same(mf::ReadBuffer(bytes.data(), bytes.size())), "model file: buffer round trip");
  const std::string path =
      (std::filesystem::temp_directory_path() / "rnncore_test_model_file.safetensors").string();
  mf::WriteFile(path, meta, tensors);
  Check(same(mf::ReadFile(path)), "model file: file round trip");
  {
    // A Reader: the header first, then chosen tensors straight into the
    // caller's memory.
    const mf::Reader reader(path);
    const mf::Header& hd = reader.header();
    Check(hd.metadata == meta && hd.tensors.size() == tensors.size() &&
              reader.file_size() == bytes.size() && reader.Find("h") == 1 && reader.Find("x") == -1,
          "model file: a Reader reads and validates the header");
    const unsigned char* data = bytes.data() + 8 + hd.header_bytes;  // 38 bytes: w h d
    // Every tensor into one buffer, back to back as in the file (one read),
    // the targets listed in another order.
    std::vector<unsigned char> all(40, 0xAB);
    reader.Read({{3, all.data() + 38, 0},
                 {2, all.data() + 30, 8},
                 {0, all.data(), 24},
                 {1, all.data() + 24, 6}});
    Check(hd.data_bytes == 38 && std::memcmp(all.data(), data, 38) == 0 && all[38] == 0xAB &&
              all[39] == 0xAB,
          "model file: Reader::Read into adjacent targets");
    std::vector<float> w2(6, -1.0f);
    std::vector<std::uint16_t> h2(3, 0);
    std::vector<double> d2(1, 0.0);
    reader.Read({{2, d2.data(), 8}, {1, h2.data(), 6}, {0, w2.data(), 24}});
    Check(w2 == w && h2 == h && d2 == d, "model file: Reader::Read into separate targets");
    std::vector<float> untouched(6, 5.0f);
    auto refused = [&](const std::vector<mf::Reader::Target>& targets) {
      try {
        reader.Read(targets);
      } catch (const rnncore::InvalidArgument&) {
        return std::all_of(untouched.begin(), untouched.end(), [](float v) { return v == 5.0f; });
      }
      return false;
    };
    Check(refused({{0, untouched.data(), 24}, {1, h2.data(), 4}}) &&
              refused({{0, untouched.data(), 24}, {0, untouched.data(), 24}}) &&
              refused({{0, untouched.data(), 24}, {4, untouched.data(), 0}}) &&
              refused({{0, untouched.data(), 24}, {1, nullptr, 6}}),
          "model file: bad targets throw InvalidArgument before anything is read");
    // The file cut short after it was opened: Read notices.
    std::filesystem::resize_file(path, bytes.size() - 4);
    bool truncated = false;
    try {
      reader.Read({{2, d2.data(), 8}});
    } catch (const rnncore::InvalidArgument& e) {
      truncated = std::string(e.what()).find("truncated") != std::string::npos;
    }
    Check(truncated, "model file: a file truncated after it was opened throws InvalidArgument");
  }
  bool is_dir = false;
  try {
    mf::Reader dir(std::filesystem::temp_directory_path().string());
  } catch (const mf::FileError& e) {
    is_dir = e.err() == EISDIR;
  }
  Check(is_dir, "model file: a directory throws FileError(EISDIR)");
  {
    // A model whose parameter buffer is left unset, filled from a file by a
    // Reader, is the model of those parameters.
    rnncore::ModelConfig cfg;
    cfg.cell = rnncore::CellKind::kLstm;
    cfg.input_size = 3;
    cfg.hidden_size = 4;
    cfg.num_layers = 2;
    rnncore::Model<float> zeroed(cfg), unset(cfg, false);
    const rnncore::Index n = zeroed.num_parameters();
    std::vector<float> p(static_cast<size_t>(n));
    for (rnncore::Index i = 0; i < n; ++i) p[static_cast<size_t>(i)] = 0.01f * float(i % 37) - 0.2f;
    Check(unset.num_parameters() == n &&
              std::all_of(zeroed.parameters(), zeroed.parameters() + n,
                          [](float v) { return v == 0.0f; }) &&
              std::all_of(unset.gradients(), unset.gradients() + n,
                          [](float v) { return v == 0.0f; }),
          "model: zero parameters by default, zero gradients either way");
    mf::WriteFile(path, {},
                  {{"p", mf::DType::kF32, {std::uint64_t(n)}, p.data(), std::uint64_t(n) * 4}});
    mf::Reader(path).Read({{0, unset.parameters(), std::uint64_t(n) * 4}});
    std::copy(p.begin(), p.end(), zeroed.parameters());
    const rnncore::Index T = 3, B = 2;
    std::vector<float> x(static_cast<size_t>(T * B * 3), 0.5f), out_a(T * B * 4), out_b(T * B * 4);
    std::vector<float> h_a(2 * B * 4), c_a(2 * B * 4), h_b(2 * B * 4), c_b(2 * B * 4);
    zeroed.Forward(T, B, x.data(), nullptr, nullptr, nullptr, out_a.data(), h_a.data(), c_a.data(),
                   false, nullptr);
    unset.Forward(T, B, x.data(), nullptr, nullptr, nullptr, out_b.data(), h_b.data(), c_b.data(),
                  false, nullptr);
    Check(out_a == out_b && h_a == h_b && c_a == c_b,
          "model: unset parameters read from a file give the model of those parameters");
  }
  std::remove(path.c_str());
  bool all_throw = true;
  for (std::size_t n = 0; n < bytes.size(); ++n) {
    try {
      mf::ReadBuffer(bytes.data(), n);
      all_throw = false;
    } catch (const rnncore::InvalidArgument&) {
    }
  }
  Check(all_throw, "model file: every truncation throws InvalidArgument");
  bool missing = false;
  try {
    mf::ReadFile("rnncore_no_such_file.safetensors");
  } catch (const mf::FileError& e) {
    missing = e.err() == ENOENT;
  }
  Check(missing, "model file: a missing file throws FileError(ENOENT)");
  const std::string bad = "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}";
  bool out_of_range = false;
  try {
    mf::ParseHeader(bad.data(), bad.size(), 4);
  } catch (const rnncore::InvalidArgument&) {
    out_of_range = true;
  }
  Check(out_of_range, "model file: offsets beyond the data throw InvalidArgument");
}

void StreamsAndBatcher(std::mt19937& rng) {
  using rnncore::Index;
  rnncore::ModelConfig c;
  c.cell = rnncore::CellKind::kLstm;
  c.input_size = 3;
  c.hidden_size = 5;
  c.num_layers = 2;
  c.norm = rnncore::Norm::kBatch;
  auto model = std::make_shared<rnncore::Model<double>>(c);
  const auto p = Random(rng, model->num_parameters(), 0.5);
  std::copy(p.begin(), p.end(), model->parameters());
  for (const auto& b : model->buffer_layout()) {  // 3 rows of running statistics per site
    if (b.variance) continue;
    const auto mean = Random(rng, 3 * b.width, 0.3);
    auto var = Random(rng, 3 * b.width, 0.4);
    for (auto& v : var) v += 1.0;
    model->SetRunning(b.stats, 3, mean.data(), var.data());
  }
  const Index T = 7, B = 3, D = 3, P = 5;
  const auto x = Random(rng, T * B * D);
  std::vector<double> whole(static_cast<size_t>(T * B * P)), hn(2 * B * P), cn(2 * B * P);
  model->Forward(T, B, x.data(), nullptr, nullptr, nullptr, whole.data(), hn.data(), cn.data(),
                 false, nullptr);
  // One step at a time, then a chunk of the rest.
  rnncore::Stream<double> s(model, B);
  std::vector<double> got(whole.size());
  for (Index t = 0; t < 3; ++t) s.Step(1, x.data() + t * B * D, got.data() + t * B * P);
  s.Step(T - 3, x.data() + 3 * B * D, got.data() + 3 * B * P);
  double err = 0;
  for (size_t i = 0; i < got.size(); ++i) err = std::max(err, std::abs(got[i] - whole[i]));
  for (size_t i = 0; i < hn.size(); ++i) err = std::max(err, std::abs(s.h()[i] - hn[i]));
  Check(err < 1e-12, "stream: steps and a chunk equal the whole sequence");
  // Row 1 restarts: from then on it is at its own step, the others past S.
  s.ResetRow(1);
  std::vector<double> y(static_cast<size_t>(B * P)), h1(2 * P), c1(2 * P);
  err = 0;
  for (Index t = 0; t < 4; ++t) {
    s.Step(1, x.data() + t * B * D, y.data());
    std::vector<double> ref(static_cast<size_t>((t + 1) * P));
    std::vector<double> xs;
    for (Index u = 0; u <= t; ++u)
      for (Index k = 0; k < D; ++k) xs.push_back(x[static_cast<size_t>((u * B + 1) * D + k)]);
    model->Forward(t + 1, 1, xs.data(), nullptr, nullptr, nullptr, ref.data(), h1.data(), c1.data(),
                   false, nullptr);
    for (Index k = 0; k < P; ++k)
      err = std::max(err,
                     std::abs(y[static_cast<size_t>(P + k)] - ref[static_cast<size_t>(t * P + k)]));
  }
  Check(err < 1e-12, "stream: a row reset later runs at its own step");
  // The batcher from 8 threads, 12 steps each, against a Stream each.
  rnncore::StreamBatcher<double> batcher(model, rnncore::BatcherOptions{4, 0.5, 1024});
  const int kThreads = 8, kSteps = 12;
  std::vector<std::vector<double>> xs(kThreads), want(kThreads), have(kThreads);
  for (int i = 0; i < kThreads; ++i) {
    xs[i] = Random(rng, kSteps * D);
    rnncore::Stream<double> one(model, 1);
    want[i].resize(static_cast<size_t>(kSteps * P));
    have[i].resize(want[i].size());
    for (int t = 0; t < kSteps; ++t) one.Step(1, xs[i].data() + t * D, want[i].data() + t * P);
  }
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i)
    threads.emplace_back([&, i] {
      const std::int64_t sid = batcher.Open(nullptr, nullptr);
      for (int t = 0; t < kSteps; ++t)
        batcher.Step(sid, xs[i].data() + t * D, have[i].data() + t * P);
      batcher.Close(sid);
    });
  for (auto& t : threads) t.join();
  err = 0;
  for (int i = 0; i < kThreads; ++i)
    for (size_t k = 0; k < want[i].size(); ++k)
      err = std::max(err, std::abs(have[i][k] - want[i][k]));
  Check(err < 1e-12, "batcher: every stream gets what its own stream gives");
  bool unknown = false, closed = false;
  try {
    batcher.Step(12345, x.data(), y.data());
  } catch (const rnncore::UnknownStream&) {
    unknown = true;
  }
  batcher.CloseAll();
  try {
    batcher.Open(nullptr, nullptr);
  } catch (const rnncore::BatcherClosed&) {
    closed = true;
  }
  Check(unknown && closed, "batcher: unknown streams and a closed batcher throw");
}

}  // namespace

int main() {
  std::mt19937 rng(7);
  RunMatchesIterate<rnncore::rnn::ForwardPass<double>, false>("rnn", 1, rng);
  RunMatchesIterate<rnncore::gru::ForwardPass<double>, false>("gru", 3, rng);
  RunMatchesIterate<rnncore::lstm::ForwardPass<double>, true>("lstm", 4, rng);
  using rnncore::CellKind;
  using rnncore::Norm;
  const Case cases[] = {
      {"rnn", CellKind::kRnn, Norm::kNone, true},
      {"lstm", CellKind::kLstm, Norm::kNone, true},
      {"gru", CellKind::kGru, Norm::kNone, true},
      {"ln-lstm", CellKind::kLstm, Norm::kLayer, true},
      {"ln-gru", CellKind::kGru, Norm::kLayer, true},
      {"ln-rnn", CellKind::kRnn, Norm::kLayer, true},
      {"bn-lstm train", CellKind::kLstm, Norm::kBatch, true},
      {"bn-lstm eval", CellKind::kLstm, Norm::kBatch, false},
      {"bn-gru train", CellKind::kGru, Norm::kBatch, true},
      {"bni-rnn train", CellKind::kRnn, Norm::kBatchInput, true},
      {"rnn dropout+zoneout", CellKind::kRnn, Norm::kNone, true, true},
      {"lstm dropout+zoneout", CellKind::kLstm, Norm::kNone, true, true},
      {"gru dropout+zoneout", CellKind::kGru, Norm::kNone, true, true},
      {"ln-lstm dropout+zoneout", CellKind::kLstm, Norm::kLayer, true, true},
      {"bn-gru zoneout eval", CellKind::kGru, Norm::kBatch, false, true},
  };
  for (const auto& tc : cases) GradientCheck(tc, rng);
  FloatMatchesDouble(rng);
  DenseMatchesLoops(rng);
  TapeRules(rng);
  ThreadInvariance(rng);
  HalfWeights(rng);
  PoolExceptions();
  ModelFiles();
  StreamsAndBatcher(rng);
  const int total =
      3 + static_cast<int>(sizeof(cases) / sizeof(cases[0])) + 18 + 1 + 2 + 2 + 10 + 3 + 6 + 4;
  std::printf("%d passed, %d failed\n", total - failures, failures);
  return failures == 0 ? 0 : 1;
}
