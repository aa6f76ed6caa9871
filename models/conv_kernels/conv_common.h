// What the convolution kernels (conv.cc: forward; weight_grad.cc: weight gradient)
// share: a convolution's geometry, its zero padding a chunk of images
// at a time, the table of register-blocked kernels and the handlers' binding.
#ifndef REDCONV_CONV_COMMON_H_
#define REDCONV_CONV_COMMON_H_

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "xla/ffi/api/ffi.h"
#include "vector.h"

namespace redconv {

// A block holds rows x tiles accumulators, its tiles' loaded vectors and, where the
// multiply-add cannot broadcast an operand from memory (AVX2; AVX-512 can), the
// broadcast: together no more than the vector registers. With AVX2's 16, blocks of two
// vectors of outputs (6 rows) ran fastest; four vectors with 2 or 3 rows were up to ~40%
// slower on most layers (benchmarks/README.md, "AVX2 machines").
#if defined(__AVX512F__)
constexpr int kVectorRegisters = 32, kBroadcastRegisters = 0;
constexpr int kMaxTiles = 4;  // output channels per block: up to 4 vectors
#else
constexpr int kVectorRegisters = 16, kBroadcastRegisters = 1;  // AVX2 (NEON pairs)
constexpr int kMaxTiles = 2;
#endif
constexpr int kMaxRows = 12;  // M rows per block

// The rows of a block of `tiles` vectors that fit the registers (at least one).
constexpr int MaxRows(int tiles) {
  return std::min(kMaxRows,
                  std::max(1, (kVectorRegisters - kBroadcastRegisters - tiles) / tiles));
}

struct Geometry {
  int64_t h, w;       // input (per image)
  int64_t hp, wp, c;  // padded input (per image)
  int64_t ho, wo, o;  // output (per image)
  int64_t sh, sw;     // strides
  int64_t top, left;  // padding before the input
  int64_t kh, kw;     // kernel window
};

// The instantiations of a block kernel K for every (rows, tiles) up to (kMaxRows,
// kMaxTiles), picked at run time: the block sizes must be compile-time constants for
// the accumulators to live in registers.
template <typename K, int kTiles, int... kRows>
constexpr auto MakeRow(std::integer_sequence<int, kRows...>) {
  return std::array{K::template kFn<kRows + 1, kTiles>...};
}

template <typename K, int... kTiles>
constexpr auto MakeTable(std::integer_sequence<int, kTiles...>) {
  return std::array{MakeRow<K, kTiles + 1>(std::make_integer_sequence<int, kMaxRows>{})...};
}

// Only the tile counts this build uses (AVX2: 1 and 2) are compiled.
template <typename K>
inline auto Lookup(int rows, int tiles) {
  static constexpr auto kTable = MakeTable<K>(std::make_integer_sequence<int, kMaxTiles>{});
  return kTable[tiles - 1][rows - 1];
}

// Calls fn(block, m0, o0, rows, tiles) with the block kernel K for (rows, tiles) blocks
// covering the rows [0, m_total) (weight gradient: kh*kw*C inputs; forward: a row's
// pixels) times the whole vectors of the output channels [0, o), as many tiles as fit;
// returns the first output channel past them (the caller's scalar tail starts there).
template <typename K, typename F>
int64_t ForEachBlock(int64_t m_total, int64_t o, F fn) {
  int64_t o0 = 0;
  for (; o0 + kLanes <= o; o0 += kMaxTiles * kLanes) {
    const int tiles = static_cast<int>(std::min<int64_t>(kMaxTiles, (o - o0) / kLanes));
    const int max_rows = MaxRows(tiles);
    // Rows split evenly (8 = 4 + 4, not 7 + 1): a block of few rows has too few
    // independent accumulators to hide the multiply-add latency.
    const int64_t blocks = (m_total + max_rows - 1) / max_rows;
    for (int64_t b = 0, m0 = 0; b < blocks; ++b) {
      const int rows = static_cast<int>(m_total / blocks + (b < m_total % blocks));
      fn(Lookup<K>(rows, tiles), m0, o0, rows, tiles);
      m0 += rows;
    }
    if (tiles < kMaxTiles) return o0 + tiles * kLanes;
  }
  return o0;
}

// The padded input and output of the images a chunk holds (at least one image).
constexpr int64_t kChunkBytes = 512 << 10;

// One image's padded input and output, in bytes.
inline int64_t ImageBytes(const Geometry& g) {
  return (g.ho * g.wo * g.o + g.hp * g.wp * g.c) * 4;
}

// Images [n0, n1) of x, padded with zeros to the windows the output reads, into xpad.
inline void Pad(const Geometry& g, const float* x, int64_t n0, int64_t n1, float* xpad) {
  std::memset(xpad, 0, (n1 - n0) * g.hp * g.wp * g.c * sizeof(float));
  const int64_t j0 = std::max<int64_t>(0, g.left), j1 = std::min(g.wp, g.w + g.left);
  if (j1 <= j0) return;
  for (int64_t b = n0; b < n1; ++b)
    for (int64_t i = 0; i < g.hp; ++i) {
      const int64_t yi = i - g.top;
      if (yi < 0 || yi >= g.h) continue;
      std::memcpy(xpad + (((b - n0) * g.hp + i) * g.wp + j0) * g.c,
                  x + ((b * g.h + yi) * g.w + (j0 - g.left)) * g.c, (j1 - j0) * g.c * 4);
    }
}

// Calls fn(c0, c1, xpad) for the images [n0, n1) in chunks whose padded input and
// output (~512 KiB) stay in L2 across the blocks; each chunk is padded here, by the
// thread that uses it, so the copy stays in its cache.
template <typename F>
void ForEachChunk(const Geometry& g, const float* x, int64_t n0, int64_t n1, F fn) {
  const int64_t chunk = std::max<int64_t>(1, kChunkBytes / ImageBytes(g));
  std::vector<float> xpad(std::min(chunk, n1 - n0) * g.hp * g.wp * g.c);
  for (int64_t c0 = n0; c0 < n1; c0 += chunk) {
    const int64_t c1 = std::min(n1, c0 + chunk);
    Pad(g, x, c0, c1, xpad.data());
    fn(c0, c1, xpad.data());
  }
}

// The geometry of x [N, H, W, C] * w [kh, kw, C, O] -> y [N, H', W', O] (the padded
// input spans exactly the windows y reads); false if the shapes do not fit together.
template <typename Dims>
bool MakeGeometry(Dims x, Dims w, Dims y, int64_t pad_top, int64_t pad_left,
                  int64_t stride_h, int64_t stride_w, Geometry* g) {
  if (x.size() != 4 || w.size() != 4 || y.size() != 4 || y[0] != x[0] || w[2] != x[3] ||
      y[3] != w[3] || pad_top < 0 || pad_left < 0 || stride_h < 1 || stride_w < 1)
    return false;
  *g = Geometry{x[1], x[2], (y[1] - 1) * stride_h + w[0], (y[2] - 1) * stride_w + w[1], x[3],
                y[1], y[2], y[3], stride_h, stride_w, pad_top, pad_left, w[0], w[1]};
  return true;
}

// Both handlers: two float32 operands and one result, the padding before the input and
// the strides; XLA's intra-op thread pool to run the parts on.
inline auto ConvBinding() {
  return xla::ffi::Ffi::Bind()
      .Ctx<xla::ffi::ThreadPool>()
      .Arg<xla::ffi::Buffer<xla::ffi::F32>>()
      .Arg<xla::ffi::Buffer<xla::ffi::F32>>()
      .Ret<xla::ffi::Buffer<xla::ffi::F32>>()
      .Attr<int64_t>("pad_top")
      .Attr<int64_t>("pad_left")
      .Attr<int64_t>("stride_h")
      .Attr<int64_t>("stride_w");
}

}  // namespace redconv

#endif  // REDCONV_CONV_COMMON_H_
