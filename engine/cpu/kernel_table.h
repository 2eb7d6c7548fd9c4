// The kernel table: every (op, dtype, tier, symbol) variant listed in
// cpu/kernels.def, and the dispatch rule the kernel factories follow.
//
// A variant is *usable* when its line is in the table, its tier was compiled
// in, the CPU and OS have it, and it is not above the ISA cap (PYENGINE_ISA,
// set_isa_cap). Factories ask kernel_usable("conv_f32_avx512") in create(),
// highest tier first, and fall back to the next line down; so the table is
// the one place that says which variants exist and may run. Read once per
// create(), never per run. Thread-safe (the table is immutable).
#pragma once

#include <string>
#include <vector>

#include "cpu/dispatch.h"

namespace engine {

struct KernelEntry {
  const char* op;      // "conv", "unary", "row_max", ...
  const char* dtype;   // "f32", "s8"
  IsaTier tier;
  const char* symbol;  // "conv_f32_avx512"
  int width;           // vector lanes (1: scalar)
};

// Every line of kernels.def, in file order.
const std::vector<KernelEntry>& kernel_table();

// Whether tier t is usable under the current cap on this CPU and build.
bool tier_usable(IsaTier t);

// The line with this symbol, or nullptr.
const KernelEntry* find_kernel(const std::string& symbol);

// True when line e may run now: its tier is usable and, on the vnni tier,
// the CPU has the VNNI form its symbol names (avx512vnni or avxvnni).
bool entry_usable(const KernelEntry& e);

// True when `symbol` is listed and usable now (entry_usable).
bool kernel_usable(const std::string& symbol);

// The usable line of (op, dtype) with the highest tier, or nullptr.
const KernelEntry* select_kernel(const std::string& op, const std::string& dtype);

}  // namespace engine
