// ModelConfig's checks and the layout of a model's parameters and running
// statistics: PyTorch's names, shapes and order.
#include "layout.h"

#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "rnncore/limits.h"
#include "rnncore/model.h"

namespace rnncore {
namespace internal {

std::vector<NormParam> NormParams(const ModelConfig& c) {
  const Index gh = c.gates() * c.hidden_size, h = c.hidden_size;
  const bool lstm = c.cell == CellKind::kLstm;
  switch (c.norm) {
    case Norm::kLayer:
      if (c.cell == CellKind::kRnn) return {{kGh, "ln_weight", h}};
      if (lstm)
        return {{kGx, "ln_ih_weight", gh},
                {kGh, "ln_hh_weight", gh},
                {kGc, "ln_cell_weight", h},
                {kBc, "ln_cell_bias", h}};
      return {{kGx, "ln_ih_weight", gh}, {kGh, "ln_hh_weight", gh}};
    case Norm::kBatch:
      if (lstm)
        return {{kGx, "bn_ih_weight", gh},
                {kGh, "bn_hh_weight", gh},
                {kGc, "bn_cell_weight", h},
                {kBc, "bn_cell_bias", h}};
      return {{kGx, "bn_ih_weight", gh}, {kGh, "bn_hh_weight", gh}};
    case Norm::kBatchInput:
      return {{kGx, "bn_ih_weight", gh}};
    case Norm::kNone:
      break;
  }
  return {};
}

}  // namespace internal

namespace {

using internal::kBc;
using internal::kGc;
using internal::kGh;
using internal::kGx;
using internal::kNumSites;
using internal::kSiteC;
using internal::kSiteH;
using internal::kSiteX;
using internal::NormParams;
using internal::Site;

std::string Suffix(Index layer, Index dir) {
  return "_l" + std::to_string(layer) + (dir == 1 ? "_reverse" : "");
}

}  // namespace

void ModelConfig::Validate() const {
  Require(input_size > 0 && input_size <= kMaxDim, "input_size must be in 1..2^31-1");
  Require(hidden_size > 0 && hidden_size <= kMaxDim, "hidden_size must be in 1..2^31-1");
  Require(num_layers > 0 && num_layers <= kMaxLayers, "num_layers must be in 1..1024");
  Require(!(reverse && bidirectional),
          "reverse=True is for a one-direction module (bidirectional runs both ways already)");
  Require(proj_size >= 0, "proj_size must be >= 0");
  Require(proj_size == 0 || cell == CellKind::kLstm, "proj_size is only supported by the LSTM");
  Require(proj_size < hidden_size, "proj_size must be smaller than hidden_size");
  Require(norm == Norm::kNone || cell != CellKind::kGru || reset_after,
          "the GRU with reset_after=False is only available with norm=None");
  Require(std::isfinite(clip) && clip >= 0, "clip must be a positive finite number (0: none)");
  Require(std::isfinite(cell_clip) && cell_clip >= 0,
          "cell_clip must be a positive finite number (0: none)");
  Require(cell == CellKind::kLstm || (!peephole && cell_clip == 0 && !input_forget),
          "peephole, cell_clip and input_forget are LSTM options");
  Require(ln_eps >= 0 && bn_eps >= 0, "normalization epsilons must be >= 0");
  Require(bn_momentum >= 0 && bn_momentum <= 1, "bn_momentum must be in [0, 1]");
  for (double p : {dropout, input_dropout, recurrent_dropout, zoneout})
    Require(p >= 0 && p < 1, "dropout and zoneout probabilities must be in [0, 1)");
}

Index ParamInfo::size() const {
  Index n = 1;
  for (Index d : shape) n *= d;
  return n;
}

std::vector<ParamInfo> ParameterLayout(const ModelConfig& c) {
  c.Validate();
  std::vector<ParamInfo> layout;
  Index offset = 0;
  auto add = [&](std::string name, std::vector<Index> shape) {
    ParamInfo p{std::move(name), std::move(shape), offset};
    // Sizes are < 2^31 each; refuse totals that would not fit in memory
    // addresses long before they could overflow.
    Index size = 1;
    for (Index d : p.shape) {
      Require(size <= kMaxParameters / d, "the model is too large: " + p.name);
      size *= d;
    }
    Require(offset <= kMaxParameters - size, "the model is too large");
    offset += size;
    layout.push_back(std::move(p));
  };
  const Index gh = c.gates() * c.hidden_size;
  for (Index l = 0; l < c.num_layers; ++l) {
    for (Index d = 0; d < c.directions(); ++d) {
      const std::string sfx = Suffix(l, d);
      add("weight_ih" + sfx, {gh, c.layer_input(l)});
      add("weight_hh" + sfx, {gh, c.out_size()});
      if (c.bias) {
        add("bias_ih" + sfx, {gh});
        add("bias_hh" + sfx, {gh});
      }
      if (c.proj_size > 0) add("weight_hr" + sfx, {c.proj_size, c.hidden_size});
      if (c.peephole) {  // consecutive: the cells read them as one (3H) vector
        for (const char* gate : {"weight_ci", "weight_cf", "weight_co"})
          add(gate + sfx, {c.hidden_size});
      }
      for (const auto& np : NormParams(c)) add(np.name + sfx, {np.width});
    }
  }
  return layout;
}

std::vector<BufferInfo> BufferLayout(const ModelConfig& c) {
  std::vector<BufferInfo> out;
  if (c.norm != Norm::kBatch && c.norm != Norm::kBatchInput) return out;
  const Index gh = c.gates() * c.hidden_size;
  const bool one_row = c.norm == Norm::kBatchInput;
  for (Index l = 0; l < c.num_layers; ++l) {
    for (Index d = 0; d < c.directions(); ++d) {
      const Index base = (l * c.directions() + d) * kNumSites;
      std::vector<std::pair<Site, std::string>> sites = {{kSiteX, "ih"}};
      if (!one_row) sites.push_back({kSiteH, "hh"});
      if (!one_row && c.cell == CellKind::kLstm) sites.push_back({kSiteC, "cell"});
      for (const auto& [site, tag] : sites) {
        // The RNN's batch norm terms are H wide (G = 1) like everything else.
        const Index width = site == kSiteC ? c.hidden_size : gh;
        for (bool var : {false, true})
          out.push_back({"bn_" + tag + "_running_" + (var ? "var" : "mean") + Suffix(l, d),
                         base + site, var, one_row, width});
      }
    }
  }
  return out;
}

}  // namespace rnncore
