// The kernel table, expanded from kernels.def.
#include "cpu/kernel_table.h"

namespace engine {

namespace {
constexpr IsaTier kTier_ref = IsaTier::kRef;
constexpr IsaTier kTier_avx2 = IsaTier::kAvx2;
constexpr IsaTier kTier_avx512 = IsaTier::kAvx512;
constexpr IsaTier kTier_vnni = IsaTier::kVnni;
constexpr IsaTier kTier_amx = IsaTier::kAmx;
}  // namespace

const std::vector<KernelEntry>& kernel_table() {
  static const std::vector<KernelEntry> table = {
#define KERNEL(op, dtype, tier, symbol, width) {#op, #dtype, kTier_##tier, #symbol, width},
#include "cpu/kernels.def"
#undef KERNEL
  };
  return table;
}

bool tier_usable(IsaTier t) {
  const IsaSet& s = isa();
  switch (t) {
    case IsaTier::kRef: return true;
    case IsaTier::kAvx2: return s.avx2;
    case IsaTier::kAvx512: return s.avx512;
    case IsaTier::kVnni: return s.avx512vnni || s.avx_vnni;
    case IsaTier::kAmx: return s.amx && amx_use() == AmxUse::kOn;  // off until tested (dispatch.h)
  }
  return false;
}

const KernelEntry* find_kernel(const std::string& symbol) {
  for (const KernelEntry& e : kernel_table())
    if (symbol == e.symbol) return &e;
  return nullptr;
}

bool kernel_usable(const std::string& symbol) {
  const KernelEntry* e = find_kernel(symbol);
  return e && tier_usable(e->tier);
}

const KernelEntry* select_kernel(const std::string& op, const std::string& dtype) {
  const KernelEntry* best = nullptr;
  for (const KernelEntry& e : kernel_table())
    if (op == e.op && dtype == e.dtype && tier_usable(e.tier) && (!best || e.tier > best->tier)) best = &e;
  return best;
}

}  // namespace engine
