#include "cpu/dispatch.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

namespace engine {
namespace {

CpuFeatures detect() {
  CpuFeatures f;
#if defined(__x86_64__) || defined(__i386__)
  unsigned a, b, c, d;
  if (__get_cpuid(1, &a, &b, &c, &d)) {
    f.fma = (c >> 12) & 1;
    f.f16c = (c >> 29) & 1;
    bool osxsave = (c >> 27) & 1;
    bool avx = (c >> 28) & 1;
    // The OS must save YMM state (XCR0 bits 1 and 2).
    unsigned xcr0 = 0;
    if (osxsave) {
      unsigned lo, hi;
      __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
      xcr0 = lo;
    }
    bool ymm = (xcr0 & 6) == 6;
    bool zmm = (xcr0 & 0xe6) == 0xe6;
    if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
      f.avx2 = avx && ymm && ((b >> 5) & 1);
      f.avx512f = zmm && ((b >> 16) & 1);
      f.avx512vnni = zmm && ((c >> 11) & 1);
    }
    if (__get_cpuid_count(7, 1, &a, &b, &c, &d)) f.avx_vnni = ymm && ((a >> 4) & 1);
    f.fma = f.fma && ymm;
  }
  char brand[49] = {0};
  unsigned regs[12];
  if (__get_cpuid(0x80000000, &a, &b, &c, &d) && a >= 0x80000004) {
    for (unsigned i = 0; i < 3; ++i) __get_cpuid(0x80000002 + i, &regs[i * 4], &regs[i * 4 + 1], &regs[i * 4 + 2], &regs[i * 4 + 3]);
    std::memcpy(brand, regs, 48);
    f.brand = brand;
    while (!f.brand.empty() && f.brand.back() == ' ') f.brand.pop_back();
    size_t start = f.brand.find_first_not_of(' ');
    f.brand = start == std::string::npos ? "" : f.brand.substr(start);
  }
#endif
  return f;
}

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = detect();
  return f;
}

namespace {
std::atomic<bool> g_force_ref{[] {
  const char* e = std::getenv("ENGINE_FORCE_REF");
  return e && std::strcmp(e, "1") == 0;
}()};
}  // namespace

void set_force_ref(bool on) { g_force_ref = on; }

bool use_avx2() {
#if defined(ENGINE_FORCE_REF)
  return false;
#else
  return !g_force_ref && cpu_features().avx2 && cpu_features().fma;
#endif
}

const char* active_isa() { return use_avx2() ? "avx2" : "ref"; }

}  // namespace engine
