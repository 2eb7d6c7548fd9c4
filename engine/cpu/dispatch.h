// CPU feature detection, read once. Kernels pick their ISA variant at
// compile time of the executor (not per call) from these flags.
// ENGINE_FORCE_REF (CMake option, or the environment variable of the same
// name set to 1) pins every kernel to its portable reference.
#pragma once

#include <string>

namespace engine {

struct CpuFeatures {
  bool avx2 = false;
  bool fma = false;
  bool f16c = false;
  bool avx512f = false;
  bool avx512vnni = false;
  bool avx_vnni = false;
  std::string brand;
};

const CpuFeatures& cpu_features();
// True when AVX2 and FMA kernels may be used (compiled in, supported by the
// CPU, not forced off).
bool use_avx2();
// "avx2" or "ref": the ISA kernels use, for reports.
const char* active_isa();
// Forces reference kernels for executors compiled from now on (tests compare
// every SIMD kernel against its reference this way).
void set_force_ref(bool on);

}  // namespace engine
