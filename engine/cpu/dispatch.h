// CPU feature detection and ISA tiers, read once per process.
//
// Tiers, from the portable baseline up (MLAS platform.cpp style):
//   ref     plain C++ loops: the fallback and the test oracle
//   avx2    AVX2 + FMA + F16C
//   avx512  AVX-512 F/BW/VL/DQ
//   vnni    int8 dot products: AVX512-VNNI (zmm) or AVX-VNNI (ymm)
//   amx     AMX-INT8 tiles, after the kernel granted XTILEDATA
// A tier is usable when the CPU has it, the OS saves its register state, it
// was compiled in (ENGINE_FORCE_REF builds have only `ref`) and it is not
// above the cap. The cap comes from PYENGINE_ISA=ref|avx2|avx512|vnni|amx
// (ENGINE_FORCE_REF=1 is the same as PYENGINE_ISA=ref) or from set_isa_cap();
// it lets every tier be tested and benchmarked on a machine that has the
// next one.
//
// Kernels pick their variant when they are created (executor compile time),
// not per call: a cap set later applies to executors compiled after it.
#pragma once

#include <string>

namespace engine {

// Ordered: a higher tier implies the lower ones' kernels may be used, except
// that `vnni` may be AVX-VNNI on a CPU without AVX-512 (check avx512()).
enum class IsaTier : int { kRef = 0, kAvx2 = 1, kAvx512 = 2, kVnni = 3, kAmx = 4 };

struct CpuFeatures {
  bool avx2 = false;
  bool fma = false;
  bool f16c = false;
  bool avx512f = false;
  bool avx512bw = false;
  bool avx512vl = false;
  bool avx512dq = false;
  bool avx512vnni = false;
  bool avx_vnni = false;
  bool amx_tile = false;
  bool amx_int8 = false;
  bool amx_permitted = false;   // arch_prctl(ARCH_REQ_XCOMP_PERM) succeeded
  std::string amx_note;         // why AMX is unusable, when the CPU has it
  std::string brand;
};

// What the CPU and OS offer, independent of caps and of the build.
const CpuFeatures& cpu_features();

// The effective feature set: CPU features limited by the build and the cap.
struct IsaSet {
  bool avx2 = false;        // AVX2 + FMA + F16C
  bool avx512 = false;      // AVX-512 F/BW/VL/DQ
  bool avx512vnni = false;  // implies avx512
  bool avx_vnni = false;    // VEX-encoded VNNI (ymm), implies avx2
  bool amx = false;         // AMX-INT8 with tile permission, implies avx512
  IsaTier tier = IsaTier::kRef;  // the highest usable tier
};
const IsaSet& isa();

// Shorthands used by kernel factories.
inline bool use_avx2() { return isa().avx2; }
inline bool use_avx512() { return isa().avx512; }
inline bool use_avx512_vnni() { return isa().avx512vnni; }
inline bool use_avx_vnni() { return isa().avx_vnni; }
inline bool use_amx() { return isa().amx; }

// The highest tier the CPU and the build support, ignoring the cap.
IsaTier max_isa_tier();
// "ref", "avx2", "avx512", "vnni", "amx".
const char* tier_name(IsaTier t);
// Parses a tier name; returns false for an unknown name.
bool parse_tier(const std::string& name, IsaTier* out);
// The usable tier's name, for reports.
inline const char* active_isa() { return tier_name(isa().tier); }

// Caps the tier for executors compiled from now on (tests and benchmarks).
void set_isa_cap(IsaTier cap);
IsaTier isa_cap();
// set_force_ref(true) == set_isa_cap(kRef); set_force_ref(false) restores the
// cap read from the environment at start-up.
void set_force_ref(bool on);

// The AMX kernels were written on CPUs without AMX and checked there only
// with the tile instructions emulated in C++, so they stay off until a run on
// a CPU with AMX has passed the int8 suite: the `amx` tier's kernel lines are
// usable only with PYENGINE_AMX=1 (or set_amx_use(kOn)), where the CPU has
// AMX-INT8 and the kernel granted tile data. kEmulated runs the same AMX
// kernel code with each tile instruction emulated in plain C++ on any
// AVX512-VNNI CPU (PYENGINE_AMX=emulated): slow, for the tests. Read at
// executor compile time, as the cap.
enum class AmxUse : int { kOff = 0, kOn = 1, kEmulated = 2 };
AmxUse amx_use();
void set_amx_use(AmxUse use);
// "off", "on", "emulated"; parse_amx_use returns false for another name.
const char* amx_use_name(AmxUse use);
bool parse_amx_use(const std::string& name, AmxUse* out);

// AVX-VNNI (VEX vpdpbusd on ymm: Alder Lake and later clients, Sierra
// Forest) in the AVX2 QConv kernel's u8 path, in place of vpmaddubsw +
// vpmaddwd + vpaddd. Written on a CPU without AVX-VNNI, so off until a run
// on one has passed the int8 suite, as AMX: kOn uses it where the CPU has
// AVX-VNNI; kEvex runs the same kernel source EVEX-encoded (AVX512-VNNI with
// VL, same semantics) on AVX512-VNNI CPUs, for the tests. From
// PYENGINE_AVXVNNI=off|on|evex (0 / 1) or set_avx_vnni_use(); read when a
// QConv kernel is created.
enum class AvxVnniUse : int { kOff = 0, kOn = 1, kEvex = 2 };
AvxVnniUse avx_vnni_use();
void set_avx_vnni_use(AvxVnniUse use);
// "off", "on", "evex"; parse_avx_vnni_use returns false for another name.
const char* avx_vnni_use_name(AvxVnniUse use);
bool parse_avx_vnni_use(const std::string& name, AvxVnniUse* out);
// Which u8 dot product the AVX2 QConv kernel's u8 path runs now: kOff
// (vpmaddubsw), kOn (AVX-VNNI: switched on and the CPU has it) or kEvex
// (asked for and the CPU has AVX512-VNNI); kOff below the avx2 tier. The
// CPU decides, not the cap (capping at avx2 is how a machine with more
// reaches the AVX2 kernel), so the kernel table's qconv_u8dot_s8_avxvnni
// line reads usable only at the vnni tier of an AVX-VNNI CPU, where the
// AVX2 QConv kernel runs it.
AvxVnniUse avx2_u8_dot();

// The tier of the int8 QConv kernel (cpu/kernels/quant/qconv_kernel.cc) for
// executors compiled now: AMX only where it is switched on (AmxUse; emulated
// on a VNNI CPU for the tests), else the best usable qconv line of
// kernels.def. One function, so that the int8_channels_last pass asks the
// same question the kernel answers.
enum class QConvTier : int { kRef = 0, kAvx2 = 1, kAvx512Vnni = 2, kAmx = 3, kAmxEmulated = 4 };
QConvTier qconv_tier();

// The activation layout between int8 convs (passes/int8_channels_last.cc).
// kNhwc turns runs of eligible QConvs channels-last (QConv channels_last=1,
// Transposes at the run's edges) whatever the tier: tiers without an NHWC
// kernel run it through NCHW transposes, which the tests use to exercise
// those paths; kNchw never does; kAuto (the default) does where the QConv
// tier is AVX512-VNNI without AMX, whose NHWC kernel reads the activations
// in place instead of packing them. From PYENGINE_INT8_LAYOUT=auto|nchw|nhwc
// or set_int8_layout(); read when the int8 pipeline runs (build time), so a
// setting made later applies to graphs optimized after it. int8_layout()
// throws kInvalidArgument while PYENGINE_INT8_LAYOUT holds another value
// (and set_int8_layout() has not been called).
enum class Int8Layout : int { kAuto = 0, kNchw = 1, kNhwc = 2 };
Int8Layout int8_layout();
void set_int8_layout(Int8Layout layout);
// "auto", "nchw", "nhwc"; parse_int8_layout returns false for another name.
const char* int8_layout_name(Int8Layout layout);
bool parse_int8_layout(const std::string& name, Int8Layout* out);
// Whether the int8 pipeline converts now: int8_layout(), kAuto resolved
// with qconv_tier().
bool int8_channels_last();

}  // namespace engine
