// The draws behind the regularization masks, for tests and references
// (rnncore/model.h: MaskHits).
#include <cstdint>

#include "regularize.h"
#include "rnncore/model.h"

namespace rnncore {

void MaskHits(std::uint64_t seed, Index layer, Index dir, MaskSite site, double p,
              std::uint64_t start, Index n, std::uint8_t* out) {
  const internal::Bernoulli draw(internal::MaskKey(seed, layer, dir, site), p);
  for (Index j = 0; j < n; ++j) out[j] = draw.Hit(start + static_cast<std::uint64_t>(j)) ? 1 : 0;
}

}  // namespace rnncore
