// int8 convolution, AMX-INT8 (qconv_amx).
//
// Status: written on CPUs without AMX and checked there only through
// EmulatedTiles below (every tile instruction in plain C++, the same kernel
// code around it), so it is off by default (dispatch.h, PYENGINE_AMX).
//
//   C[16 x 48] (int32) += A[16 x 64] (weights, s8) . B[64 x 48] (activations, u8)
// per k chunk of 64: one weight tile (16 output channels x 64 k bytes) and,
// per 16-column panel, one activation tile and one tdpbsud into that panel's
// 16 x 16 int32 tile (16 x 16 x 64 = 16384 multiply-adds each). An
// activation tile is 16 k groups (rows) of 16 columns x 4 bytes: a 1 KB slice
// of the VNNI tier's packed panel ([k group][16][4], qconv_avx512vnni.h), so
// the panels, their pack, the +128 shift of signed inputs with its weight-sum
// correction, the tile's shape (rows = channels, 48 columns) and the
// epilogue are the VNNI tier's: AMX replaces the micro-kernel only, and the
// accumulators are the same exact int32 sums, so the bits are the same.
//
// Tile registers: tmm0-2 the three C tiles, tmm4 the weight tile, tmm5-7 the
// activation tiles; every tile is 16 rows x 64 bytes, so one configuration
// serves every conv (loaded by each thread when it starts a call's tasks).
// Weights: per group ceil(mg/16) tiles of [ceil(k/64)][16][64] s8, row-major
// k zero-padded to whole chunks (pack_a_amx). The last chunk's activation
// tile then reads up to 15 k groups past its panel (the next panel's bytes,
// or kSlack bytes after the last one): they meet zero weights.
// Preconditions: entered only where kernel_usable("qconv_s8_amx") (the CPU
// has AMX-INT8, the kernel granted tile data, PYENGINE_AMX=1), or emulated
// where the VNNI tier is usable; ws sized by qconv_amx_workspace().
#include <immintrin.h>

#include <cstring>

#include "cpu/kernels/quant/qconv_avx512vnni.h"

namespace engine::qk {
namespace {

constexpr int64_t kChunkGroups = 16;               // k groups of 4 bytes per tile row
constexpr int64_t kChunkBytes = kChunkGroups * 64;  // one 16 x 64-byte tile
constexpr int64_t kSlack = kChunkBytes;             // read past the last panel (see the top)

// The palette-1 tile configuration (Intel SDM, LDTILECFG): every tile 16
// rows of 64 bytes.
struct alignas(64) TileConfig {
  uint8_t palette_id = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};
static_assert(sizeof(TileConfig) == 64, "LDTILECFG reads 64 bytes");

// The hardware. GCC's _tile_* macros paste the tile number into the
// instruction's text, so a template parameter cannot name it: the same
// instructions in inline assembly, with the number as an immediate operand
// ("%c": printed bare). Same encodings as the macros (checked with objdump).
struct AmxTiles {
  static void configure() {
    TileConfig cfg;
    for (int t = 0; t < 8; ++t) {
      cfg.colsb[t] = 64;
      cfg.rows[t] = 16;
    }
    _tile_loadconfig(&cfg);
  }
  static void release() { _tile_release(); }
  template <int T>
  static void zero() {
    __asm__ volatile("tilezero %%tmm%c0" ::"i"(T));
  }
  template <int T>
  static void load(const void* p, int64_t stride) {
    __asm__ volatile("tileloadd (%0,%1,1), %%tmm%c2" ::"r"(p), "r"(stride), "i"(T) : "memory");
  }
  template <int T>
  static void store(void* p, int64_t stride) {
    __asm__ volatile("tilestored %%tmm%c2, (%0,%1,1)" ::"r"(p), "r"(stride), "i"(T) : "memory");
  }
  // C += A (signed bytes) . B (unsigned bytes): C[m][n] += sum over k groups
  // p and bytes i of A[m][4p + i] * B[p][4n + i].
  template <int C, int A, int B>
  static void dpbsud() {
    __asm__ volatile("tdpbsud %%tmm%c2, %%tmm%c1, %%tmm%c0" ::"i"(C), "i"(A), "i"(B));
  }
};

// The same operations on eight 1 KB arrays per thread, as the SDM defines
// them for 16 x 64-byte tiles (wrapping int32 sums).
struct EmulatedTiles {
  struct Regs {
    alignas(64) uint8_t t[8][16][64];
  };
  static Regs& regs() {
    thread_local Regs r;
    return r;
  }
  static void configure() {}
  static void release() {}
  template <int T>
  static void zero() {
    std::memset(regs().t[T], 0, sizeof(regs().t[T]));
  }
  template <int T>
  static void load(const void* p, int64_t stride) {
    for (int r = 0; r < 16; ++r) std::memcpy(regs().t[T][r], static_cast<const uint8_t*>(p) + r * stride, 64);
  }
  template <int T>
  static void store(void* p, int64_t stride) {
    for (int r = 0; r < 16; ++r) std::memcpy(static_cast<uint8_t*>(p) + r * stride, regs().t[T][r], 64);
  }
  template <int C, int A, int B>
  static void dpbsud() {
    Regs& s = regs();
    for (int m = 0; m < 16; ++m)
      for (int n = 0; n < 16; ++n) {
        uint32_t acc;
        std::memcpy(&acc, s.t[C][m] + 4 * n, 4);
        for (int k = 0; k < 64; ++k)
          acc += static_cast<uint32_t>(static_cast<int32_t>(static_cast<int8_t>(s.t[A][m][k])) *
                                       static_cast<int32_t>(s.t[B][k / 4][4 * n + k % 4]));
        std::memcpy(s.t[C][m] + 4 * n, &acc, 4);
      }
  }
};

// The 16 x (16 * NV) tile over `chunks` k chunks: a is the weight tile's
// [chunks][16][64] bytes; chunk j's activation tile of panel v has its 16
// rows (k groups) brow bytes apart from bchunk(j) + v * bpanel: packed
// panels (bchunk(j) = b + j * kChunkBytes, brow = 64, bpanel = the panel
// size) or the quad planes (bchunk(j) = b + quad_off[16 j], brow = a quad's
// bytes, bpanel = 64). c is [16][kTileLd] int32.
template <class Tiles, int NV, class BChunk>
void kernel_amx(const uint8_t* a, BChunk bchunk, int64_t brow, int64_t bpanel, int64_t chunks, int32_t* c) {
  Tiles::template zero<0>();
  if constexpr (NV > 1) Tiles::template zero<1>();
  if constexpr (NV > 2) Tiles::template zero<2>();
  for (int64_t j = 0; j < chunks; ++j) {
    const uint8_t* b = bchunk(j);
    Tiles::template load<4>(a + j * kChunkBytes, 64);
    Tiles::template load<5>(b, brow);
    Tiles::template dpbsud<0, 4, 5>();
    if constexpr (NV > 1) {
      Tiles::template load<6>(b + bpanel, brow);
      Tiles::template dpbsud<1, 4, 6>();
    }
    if constexpr (NV > 2) {
      Tiles::template load<7>(b + 2 * bpanel, brow);
      Tiles::template dpbsud<2, 4, 7>();
    }
  }
  constexpr int64_t ld = kTileLd * sizeof(int32_t);
  Tiles::template store<0>(c, ld);
  if constexpr (NV > 1) Tiles::template store<1>(c + 16, ld);
  if constexpr (NV > 2) Tiles::template store<2>(c + 32, ld);
}

template <class Tiles, class BChunk>
void kernel_tile(int nv, const uint8_t* a, BChunk bchunk, int64_t brow, int64_t bpanel, int64_t kq, int32_t* tile) {
  const int64_t chunks = (kq + kChunkGroups - 1) / kChunkGroups;
  if (nv == 3) kernel_amx<Tiles, 3>(a, bchunk, brow, bpanel, chunks, tile);
  else if (nv == 2) kernel_amx<Tiles, 2>(a, bchunk, brow, bpanel, chunks, tile);
  else kernel_amx<Tiles, 1>(a, bchunk, brow, bpanel, chunks, tile);
}

// The ISA part of qconv_tiled.h's driver: VnniPanels (VNNI's panels, quad
// planes and epilogue) with AMX's micro-kernel. The quad planes' k groups
// are in (tap, quad) order, and only convs with cg % 64 == 0 read them (the
// caller packs pack_a_amx_quads weights only for those): a chunk's 16
// groups are then 16 quads of one tap, quad_bytes apart.
template <class Tiles>
struct AmxTraits : VnniPanels {
  using VnniPanels::VnniPanels;
  static constexpr int kMR = kAmxMR, kKGroup = 4, kNV = 3;
  static constexpr bool kQuads = true, kTapMajorQuads = true, kQuadCols = false;
  int64_t quad_bytes = 0;

  // The tile configuration is the thread's state, which other code in the
  // process (oneDNN, PyTorch) may change between calls: loaded at the start
  // of each call's work on a thread, and the tiles released at its end.
  void thread_begin() const { Tiles::configure(); }
  void thread_end() const { Tiles::release(); }
  void kernel(int nv, int, const uint8_t* a, const uint8_t* b, int64_t bstride, int64_t kq, int32_t* tile,
              int64_t c0) const {
    kernel_tile<Tiles>(nv, a, [b](int64_t j) { return b + j * kChunkBytes; }, 64, bstride, kq, tile);
    add_start(nv, tile, c0);
  }
  void kernel_quads(int nv, int, const uint8_t* a, const uint8_t* b, const int64_t* off, int64_t kq,
                    int32_t* tile, int64_t c0) const {
    kernel_tile<Tiles>(nv, a, [b, off](int64_t j) { return b + off[j * kChunkGroups]; }, quad_bytes, 64, kq, tile);
    add_start(nv, tile, c0);
  }
  // The tiles start at zero: the sums' start (VnniPanels::start) is added
  // to the stored tile's rows.
  void add_start(int nv, int32_t* tile, int64_t c0) const {
    for (int r = 0; r < kAmxMR; ++r) {
      const __m512i s = _mm512_set1_epi32(start[c0 + r]);
      for (int v = 0; v < nv; ++v) {
        int32_t* p = tile + r * kTileLd + 16 * v;
        _mm512_store_si512(p, _mm512_add_epi32(_mm512_load_si512(p), s));
      }
    }
  }
};
static_assert(AmxTraits<AmxTiles>::kNV == kNV, "the tile width and the column map must agree");

// tiled_plan with kSlack more bytes after each thread's packed panels.
TiledPlan amx_plan(const ConvGeom& g, int threads, bool quads) {
  TiledPlan t = tiled_plan<AmxTraits<AmxTiles>>(g, threads, quads);
  if (t.packed_bytes) t.packed_bytes += kSlack;
  return t;
}

template <class Tiles>
void run_amx(ThreadPool& pool, const ConvGeom& g, const int8_t* x, bool x_nonneg, const int8_t* packed_w,
             const int8_t* packed_w_quads, const int32_t* corr, const Epilogue& e, void* ws) {
  const TiledPlan t = amx_plan(g, pool.num_threads(), packed_w_quads != nullptr);
  const EpiConst k(e);
  AmxTraits<Tiles> tr(packed_w, packed_w_quads, packed_a_amx_bytes(t.mg, t.k),
                      round_up(t.k, 4 * kChunkGroups) * kAmxMR, x_nonneg, k, corr, g.m);
  tr.quad_bytes = 4 * t.chan_bytes;
  run_tiled<AmxTraits<Tiles>, Cols>(pool, g, x, t, ws, tr);
}

// The weight tiles of rows x k weights (row r at src + r * rs): byte kk of
// row r's padded k is src[r * rs + col(kk)], or 0 where col(kk) < 0.
template <class Col>
void pack_a_amx_cols(const int8_t* src, int64_t rs, int64_t rows, int64_t k, const Col& col, int8_t* out) {
  const int64_t chunks = round_up(k, 64) / 64;
  for (int64_t mt = 0; mt < round_up(rows, kAmxMR) / kAmxMR; ++mt)
    for (int64_t j = 0; j < chunks; ++j)
      for (int r = 0; r < kAmxMR; ++r) {
        int8_t* dst = out + ((mt * chunks + j) * kAmxMR + r) * 64;
        const int64_t row = mt * kAmxMR + r;
        for (int64_t b = 0; b < 64; ++b) {
          const int64_t c = col(j * 64 + b);
          dst[b] = row < rows && c >= 0 ? src[row * rs + c] : 0;
        }
      }
}

}  // namespace

void pack_a_amx(const int8_t* src, int64_t rs, int64_t rows, int64_t k, int8_t* out, int32_t* corr) {
  pack_a_amx_cols(src, rs, rows, k, [k](int64_t kk) { return kk < k ? kk : -1; }, out);
  weight_sums(src, rs, rows, k, 128, corr);
}

void pack_a_amx_quads(const int8_t* src, int64_t rs, int64_t rows, int64_t cg, int64_t taps, int8_t* out) {
  const int64_t nq = cg / 4;
  // Byte kk = 4 p + h of group p = tap * nq + quad: channel 4 quad + h at that tap.
  pack_a_amx_cols(src, rs, rows, cg * taps, [nq, taps](int64_t kk) {
    const int64_t p = kk / 4, h = kk % 4;
    return (p % nq * 4 + h) * taps + p / nq;
  }, out);
}

size_t qconv_amx_workspace(const ConvGeom& g, int threads, bool quads) {
  return amx_plan(g, threads, quads).workspace(std::max(threads, 1));
}

void qconv_amx(ThreadPool& pool, const ConvGeom& g, const int8_t* x, bool x_nonneg, const int8_t* packed_w,
               const int8_t* packed_w_quads, const int32_t* corr, const Epilogue& e, void* ws, bool emulated) {
  if (emulated) run_amx<EmulatedTiles>(pool, g, x, x_nonneg, packed_w, packed_w_quads, corr, e, ws);
  else run_amx<AmxTiles>(pool, g, x, x_nonneg, packed_w, packed_w_quads, corr, e, ws);
}

}  // namespace engine::qk
