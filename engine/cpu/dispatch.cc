#include "cpu/dispatch.h"

#include <array>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "core/error.h"
#include "cpu/kernel_table.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#if defined(__linux__) && defined(__x86_64__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace engine {
namespace {

#if defined(__x86_64__) || defined(__i386__)
unsigned read_xcr0() {
  unsigned lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  (void)hi;
  return lo;
}
#endif

// Linux refuses AMX tile data to a process until it asks for it
// (Documentation/arch/x86/xstate.rst); the first tile instruction without
// permission kills the process with SIGILL.
bool request_amx_permission(std::string* note) {
#if defined(__linux__) && defined(__x86_64__)
  constexpr long kArchReqXcompPerm = 0x1023;
  constexpr long kXfeatureXtiledata = 18;
  long rc = syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata);
  if (rc != 0) {
    // ENOSPC: a thread's alternate signal stack (sigaltstack; Python's
    // faulthandler sets one) is too small for the tile state.
    *note = std::string("the kernel refused AMX tile data (arch_prctl ARCH_REQ_XCOMP_PERM: ") + std::strerror(errno) +
            (errno == ENOSPC ? "; an alternate signal stack, such as faulthandler's, is too small for it" : "") + ")";
    return false;
  }
  return true;
#else
  *note = "AMX needs Linux on x86-64";
  return false;
#endif
}

CpuFeatures detect() {
  CpuFeatures f;
#if defined(__x86_64__) || defined(__i386__)
  unsigned a, b, c, d;
  if (__get_cpuid(1, &a, &b, &c, &d)) {
    f.fma = (c >> 12) & 1;
    f.f16c = (c >> 29) & 1;
    bool osxsave = (c >> 27) & 1;
    bool avx = (c >> 28) & 1;
    unsigned xcr0 = osxsave ? read_xcr0() : 0;
    bool ymm = (xcr0 & 0x6) == 0x6;          // SSE + AVX state
    bool zmm = (xcr0 & 0xe6) == 0xe6;        // + opmask, ZMM_Hi256, Hi16_ZMM
    bool tiles = (xcr0 & 0x60000) == 0x60000;  // XTILECFG + XTILEDATA
    if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
      f.avx2 = avx && ymm && ((b >> 5) & 1);
      f.avx512f = zmm && ((b >> 16) & 1);
      f.avx512dq = zmm && ((b >> 17) & 1);
      f.avx512bw = zmm && ((b >> 30) & 1);
      f.avx512vl = zmm && ((b >> 31) & 1);
      f.avx512vnni = zmm && ((c >> 11) & 1);
      f.amx_tile = tiles && ((d >> 24) & 1);
      f.amx_int8 = tiles && ((d >> 25) & 1);
    }
    if (__get_cpuid_count(7, 1, &a, &b, &c, &d)) f.avx_vnni = ymm && ((a >> 4) & 1);
    f.fma = f.fma && ymm;
    f.f16c = f.f16c && ymm;
    if (f.amx_tile && f.amx_int8) f.amx_permitted = request_amx_permission(&f.amx_note);
  }
  char brand[49] = {0};
  unsigned regs[12];
  if (__get_cpuid(0x80000000, &a, &b, &c, &d) && a >= 0x80000004) {
    for (unsigned i = 0; i < 3; ++i)
      __get_cpuid(0x80000002 + i, &regs[i * 4], &regs[i * 4 + 1], &regs[i * 4 + 2], &regs[i * 4 + 3]);
    std::memcpy(brand, regs, 48);
    f.brand = brand;
    while (!f.brand.empty() && f.brand.back() == ' ') f.brand.pop_back();
    size_t start = f.brand.find_first_not_of(' ');
    f.brand = start == std::string::npos ? "" : f.brand.substr(start);
  }
#endif
  return f;
}

IsaTier env_cap() {
  const char* r = std::getenv("ENGINE_FORCE_REF");
  if (r && std::strcmp(r, "1") == 0) return IsaTier::kRef;
  const char* e = std::getenv("PYENGINE_ISA");
  IsaTier t;
  if (e && *e && parse_tier(e, &t)) return t;
  return IsaTier::kAmx;
}

std::atomic<int> g_cap{-1};  // -1: not read from the environment yet

IsaSet compute(IsaTier cap) {
  IsaSet s;
#if !defined(ENGINE_FORCE_REF)
  const CpuFeatures& f = cpu_features();
  s.avx2 = cap >= IsaTier::kAvx2 && f.avx2 && f.fma && f.f16c;
  s.avx512 = cap >= IsaTier::kAvx512 && s.avx2 && f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq;
  s.avx512vnni = cap >= IsaTier::kVnni && s.avx512 && f.avx512vnni;
  s.avx_vnni = cap >= IsaTier::kVnni && s.avx2 && f.avx_vnni;
  s.amx = cap >= IsaTier::kAmx && s.avx512 && f.amx_tile && f.amx_int8 && f.amx_permitted;
  s.tier = s.amx                           ? IsaTier::kAmx
           : (s.avx512vnni || s.avx_vnni) ? IsaTier::kVnni
           : s.avx512                     ? IsaTier::kAvx512
           : s.avx2                       ? IsaTier::kAvx2
                                          : IsaTier::kRef;
#else
  (void)cap;
#endif
  return s;
}

// One effective set per cap, computed once.
struct IsaSets {
  IsaSet by_cap[5];
  IsaSets() {
    for (int i = 0; i < 5; ++i) by_cap[i] = compute(static_cast<IsaTier>(i));
  }
};
const IsaSets& sets() {
  static const IsaSets s;
  return s;
}

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = detect();
  return f;
}

IsaTier isa_cap() {
  int c = g_cap.load(std::memory_order_relaxed);
  if (c < 0) {
    c = static_cast<int>(env_cap());
    g_cap.store(c, std::memory_order_relaxed);
  }
  return static_cast<IsaTier>(c);
}

const IsaSet& isa() { return sets().by_cap[static_cast<int>(isa_cap())]; }

IsaTier max_isa_tier() { return sets().by_cap[static_cast<int>(IsaTier::kAmx)].tier; }

const char* tier_name(IsaTier t) {
  switch (t) {
    case IsaTier::kRef: return "ref";
    case IsaTier::kAvx2: return "avx2";
    case IsaTier::kAvx512: return "avx512";
    case IsaTier::kVnni: return "vnni";
    case IsaTier::kAmx: return "amx";
  }
  return "ref";
}

bool parse_tier(const std::string& name, IsaTier* out) {
  for (int i = 0; i < 5; ++i) {
    if (name == tier_name(static_cast<IsaTier>(i))) {
      *out = static_cast<IsaTier>(i);
      return true;
    }
  }
  return false;
}

void set_isa_cap(IsaTier cap) { g_cap.store(static_cast<int>(cap), std::memory_order_relaxed); }

void set_force_ref(bool on) { set_isa_cap(on ? IsaTier::kRef : env_cap()); }

namespace {

// A process-wide setting with named values (the enum's values index
// `names`), read from `env` on first use unless set first (-1: not read
// yet). "0" and "1" also name values 0 and 1 where `on_off`. A bad value
// in the environment is an error where `strict` (it is then not cached, so
// every use reports it until it is fixed), else the default (value 0).
struct NamedSetting {
  const char* env;
  std::array<const char*, 3> names;
  bool on_off, strict;
  std::atomic<int> value{-1};

  const char* name(int v) const { return v >= 0 && v < 3 ? names[v] : names[0]; }
  bool parse(const std::string& s, int* out) const {
    for (int v = 0; v < 3; ++v) {
      if (s == names[v]) {
        *out = v;
        return true;
      }
    }
    if (on_off && (s == "0" || s == "1")) {
      *out = s == "1" ? 1 : 0;
      return true;
    }
    return false;
  }
  template <class E>
  bool parse_as(const std::string& s, E* out) const {
    int v = 0;
    if (!parse(s, &v)) return false;
    *out = static_cast<E>(v);
    return true;
  }
  int get() {
    int v = value.load(std::memory_order_relaxed);
    if (v < 0) {
      const char* e = std::getenv(env);
      v = 0;
      if (e && *e && !parse(e, &v)) {
        ENGINE_ENFORCE(!strict, kInvalidArgument, env, "='", e, "': expected ", names[0], ", ", names[1], " or ",
                       names[2], " (or leave it unset: ", names[0], ")");
        v = 0;
      }
      value.store(v, std::memory_order_relaxed);
    }
    return v;
  }
  void set(int v) { value.store(v, std::memory_order_relaxed); }
};

NamedSetting g_amx_use{"PYENGINE_AMX", {"off", "on", "emulated"}, true, false};
NamedSetting g_avx_vnni_use{"PYENGINE_AVXVNNI", {"off", "on", "evex"}, true, false};
// A bad PYENGINE_INT8_LAYOUT is an error, not a silent default: it decides
// the layout of every int8 build, and a typo would otherwise go unnoticed.
NamedSetting g_int8_layout{"PYENGINE_INT8_LAYOUT", {"auto", "nchw", "nhwc"}, false, true};

}  // namespace

const char* amx_use_name(AmxUse use) { return g_amx_use.name(static_cast<int>(use)); }
bool parse_amx_use(const std::string& name, AmxUse* out) { return g_amx_use.parse_as(name, out); }
AmxUse amx_use() { return static_cast<AmxUse>(g_amx_use.get()); }
void set_amx_use(AmxUse use) { g_amx_use.set(static_cast<int>(use)); }

const char* avx_vnni_use_name(AvxVnniUse use) { return g_avx_vnni_use.name(static_cast<int>(use)); }
bool parse_avx_vnni_use(const std::string& name, AvxVnniUse* out) { return g_avx_vnni_use.parse_as(name, out); }
AvxVnniUse avx_vnni_use() { return static_cast<AvxVnniUse>(g_avx_vnni_use.get()); }
void set_avx_vnni_use(AvxVnniUse use) { g_avx_vnni_use.set(static_cast<int>(use)); }

const char* int8_layout_name(Int8Layout layout) { return g_int8_layout.name(static_cast<int>(layout)); }
bool parse_int8_layout(const std::string& name, Int8Layout* out) { return g_int8_layout.parse_as(name, out); }
Int8Layout int8_layout() { return static_cast<Int8Layout>(g_int8_layout.get()); }
void set_int8_layout(Int8Layout layout) { g_int8_layout.set(static_cast<int>(layout)); }

AvxVnniUse avx2_u8_dot() {
  if (!kernel_usable("qconv_s8_avx2")) return AvxVnniUse::kOff;
  switch (avx_vnni_use()) {
    // The CPU decides, whatever the cap above avx2: the tests reach the AVX2
    // kernel on a VNNI machine by capping at avx2.
    case AvxVnniUse::kOn: return cpu_features().avx_vnni ? AvxVnniUse::kOn : AvxVnniUse::kOff;
    case AvxVnniUse::kEvex: return cpu_features().avx512vnni && cpu_features().avx512vl ? AvxVnniUse::kEvex
                                                                                          : AvxVnniUse::kOff;
    case AvxVnniUse::kOff: break;
  }
  return AvxVnniUse::kOff;
}

QConvTier qconv_tier() {
  // (AMX shares VNNI's epilogue and depthwise kernel: every AMX CPU has
  // AVX512-VNNI, but the check costs nothing.)
  if (kernel_usable("qconv_s8_amx") && kernel_usable("qconv_s8_avx512vnni")) return QConvTier::kAmx;
  if (amx_use() == AmxUse::kEmulated && kernel_usable("qconv_s8_avx512vnni")) return QConvTier::kAmxEmulated;
  if (kernel_usable("qconv_s8_avx512vnni")) return QConvTier::kAvx512Vnni;
  return kernel_usable("qconv_s8_avx2") ? QConvTier::kAvx2 : QConvTier::kRef;
}

bool int8_channels_last() {
  switch (int8_layout()) {
    case Int8Layout::kNchw: return false;
    case Int8Layout::kNhwc: return true;
    case Int8Layout::kAuto: break;
  }
  // AMX keeps NCHW: its kernel has no NHWC form, and the transposes would
  // only add work there.
  return qconv_tier() == QConvTier::kAvx512Vnni;
}

}  // namespace engine
