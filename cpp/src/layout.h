// The parameter and buffer layout of a model (rnncore/model.h:
// ParameterLayout, BufferLayout), as Model reads it: which slot of a layer
// direction each parameter fills, and which site each running statistic
// belongs to.
#ifndef RNNCORE_LAYOUT_H_
#define RNNCORE_LAYOUT_H_

#include <string>
#include <vector>

#include "rnncore/common.h"
#include "rnncore/model.h"

namespace rnncore {
namespace internal {

// Parameter slots of one layer and direction, in layout order.
// kPeep: weight_ci, weight_cf, weight_co, consecutive (3H).
enum Slot { kWih = 0, kWhh, kBih, kBhh, kWhr, kPeep, kGx, kGh, kGc, kBc, kNumSlots };
// Normalization sites, for the running statistics.
enum Site { kSiteX = 0, kSiteH, kSiteC, kNumSites };

// A normalization parameter of a layer direction: (slot, name, width).
struct NormParam {
  Slot slot;
  std::string name;
  Index width;
};

// The normalization parameters of one layer direction under c.norm, in
// layout order.
std::vector<NormParam> NormParams(const ModelConfig& c);

}  // namespace internal
}  // namespace rnncore

#endif  // RNNCORE_LAYOUT_H_
