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

// The `vnni` tier is AVX512-VNNI (zmm) or AVX-VNNI (ymm, CPUs without
// AVX-512: Alder Lake and later clients): a line of that tier names which
// one it needs (..._avx512vnni, ..._avxvnni), and runs only where it is.
bool entry_usable(const KernelEntry& e) {
  if (!tier_usable(e.tier)) return false;
  if (e.tier != IsaTier::kVnni) return true;
  const std::string symbol = e.symbol;
  if (symbol.find("avx512vnni") != std::string::npos) return isa().avx512vnni;
  // (AVX-VNNI kernels stay off until tested on such a CPU: dispatch.h.)
  if (symbol.find("avxvnni") != std::string::npos) return isa().avx_vnni && avx_vnni_use() == AvxVnniUse::kOn;
  return true;
}

bool kernel_usable(const std::string& symbol) {
  const KernelEntry* e = find_kernel(symbol);
  return e && entry_usable(*e);
}

const KernelEntry* select_kernel(const std::string& op, const std::string& dtype) {
  const KernelEntry* best = nullptr;
  for (const KernelEntry& e : kernel_table())
    if (op == e.op && dtype == e.dtype && entry_usable(e) && (!best || e.tier > best->tier)) best = &e;
  return best;
}

}  // namespace engine
